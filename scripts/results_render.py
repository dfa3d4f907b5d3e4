"""The sections of docs/results.md (scripts/gen_results.py): number formatting and one
renderer per kind of benchmark file (trade-off grids, boards, demo, on-manifold, scale-out,
mutation, and a generic one for every other JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

ACC_KEYS = {"clean", "pgd", "worst", "apgd_ce", "apgd_dlr", "square", "onmanifold", "transfer"}
ACC_KEYS |= {"clean_acc", "transfer_acc", "corruption_mean", "acc", "killed_fraction", "pgd10"}
Json = Dict[str, Any]


# ---------------------------------------------------------------- formatting


def pct(v: Optional[float], std: Optional[float] = None) -> str:
    """0.7555 -> '75.6' (and ' ± 0.4' with a std); '-' for a missing value."""
    if v is None:
        return "-"
    return f"{100 * v:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def num(v: Any) -> str:
    """A table cell: thousands separators for ints, 4 significant digits for floats."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v).replace("|", "/").replace("\n", " ")


def cell(key: str, v: Any) -> str:
    """A record's value: accuracies (and their stds) in %, paths by their file name."""
    base = key[: -len("_std")] if key.endswith("_std") else key
    if base in ACC_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool):
        return pct(v)
    if isinstance(v, str) and v.startswith("/"):
        return Path(v).name
    return num(v)


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines + [""]


# ---------------------------------------------------------------- renderers


def attack_name(a: Json) -> str:
    """{'name': 'pgd', 'steps': 20, 'restarts': 5} -> 'PGD-20x5'."""
    name = str(a.get("name", "?")).upper()
    steps, restarts = a.get("steps"), a.get("restarts") or 1
    if name == "SQUARE":
        return f"Square-{a.get('queries', steps)}"
    return f"{name}-{steps}" + (f"x{restarts}" if restarts > 1 else "")


def suite_text(suite: Json) -> str:
    attacks = suite.get("attacks") or []
    eps = {a.get("eps") for a in attacks}
    norm = {str(a.get("norm", "linf")).capitalize() for a in attacks}
    return (
        f"worst case per image over the `{suite.get('name')}` suite "
        f"({', '.join(attack_name(a) for a in attacks)}; {'/'.join(sorted(norm))} eps "
        f"{'/'.join(str(e) for e in sorted(eps))}): an image counts only if every attack fails"
    )


def tradeoff(name: str, d: Json) -> List[str]:
    """A tradeoff-style grid: sparsity x method, worst case ± std / clean, over the seeds."""
    if d.get("benchmark") == "tradeoff_structured":
        return tradeoff_structured(d)
    lines = [
        f"{_protocol(d)}. Cells: worst ± std / clean, %; worst = {suite_text(d.get('suite', {}))}.",
        "",
    ]
    cells = d.get("cells", [])
    methods = list(dict.fromkeys(c["method"] for c in cells))
    grid = {(c["method"], c["sparsity"]): c for c in cells}
    rows = []
    for sp in sorted({c["sparsity"] for c in cells}):
        row: List[str] = [f"{sp:g}"]
        for m in methods:
            c = grid.get((m, sp))
            row.append(
                "-" if c is None else f"{pct(c['worst'], c.get('worst_std'))} / {pct(c['clean'])}"
            )
        rows.append(row)
    lines += md_table(["sparsity", *methods], rows)
    settings = d.get("methods", {})
    if settings:
        lines.append(
            "Methods: "
            + "; ".join(
                f"`{m}` = {', '.join(f'{k}={v}' for k, v in o.items())}"
                for m, o in settings.items()
            )
            + "."
        )
        lines.append("")
    return lines + tradeoff_targets(d)


def _protocol(d: Json) -> str:
    """The trade-off protocol and teacher of a result, one sentence and a clause: data, epochs,
    training adversary, seeds, batch; the teacher's clean and worst case."""
    s, t = d.get("settings", {}), d.get("teacher", {})
    batches = sorted({r.get("batch_size") for r in d.get("rows", []) if r.get("batch_size")})
    return (
        f"Data `{s.get('data')}`; {s.get('epochs')} pruning + {s.get('finetune_epochs')} "
        f"fine-tune epochs; PGD-{s.get('steps')} training at eps {s.get('eps')}; seeds "
        f"{s.get('seeds')}" + (f"; batch {batches}" if batches else "") + ". "
        f"Teacher: clean {pct(t.get('clean'))}, worst {pct(t.get('worst'))} "
        f"({t.get('n_test')} test images)"
    )


def tradeoff_targets(d: Json, level: str = "sparsity", resolved: bool = False) -> List[str]:
    """The verdict per level (``resolved``: a target counts as met only when the gap is also
    beyond the sum of the stds)."""
    targets = d.get("targets") or {}
    if not targets:
        return []
    rows = []
    for sp, t in sorted(targets.items(), key=lambda kv: float(kv[0].rstrip("x"))):
        met = t.get("robust_target_met") and (t.get("gap_resolved") or not resolved)
        rows.append(
            [
                sp,
                t.get("best_baseline"),
                f"{t.get('gap_points', 0):+.1f}",
                f"{t.get('spread_points', 0):.1f}",
                "met" if met else "missed",
                f"{t.get('clean_gap_points', 0):+.1f}",
                "met" if t.get("clean_target_met") else "missed",
            ]
        )
    who = next(iter(targets.values())).get("candidate", "default")
    head = [level, "best baseline", f"{who} - best (worst, pts)", "spread (pts)"]
    head += ["robust target", "clean gap (pts)", "clean target"]
    return [
        "Against the best baseline (a gap counts only beyond the sum of the stds):",
        "",
    ] + md_table(head, rows)


def tradeoff_structured(d: Json) -> List[str]:
    """benchmarks/tradeoff_structured.py: level x method, worst ± std / clean ± std, the
    students' MACs ratios and widths; students that missed their level and cells not run."""
    s, t = d.get("settings", {}), d.get("teacher", {})
    lines = [
        f"{_protocol(d)}, {num(t.get('macs'))} MACs, "
        f"widths {_widths(t.get('widths') or {})}. Every student made by `compress "
        f"--structured --budget macs=L{',shape=' + s['shape'] if s.get('shape') else ''}` "
        "with L = floor(teacher MACs / N); worst = "
        f"{suite_text(d.get('suite', {}))}.",
        "",
    ]
    rows = [
        [
            c["level"],
            c["method"],
            c["n"],
            pct(c["worst"], c.get("worst_std")),
            pct(c["clean"], c.get("clean_std")),
            ", ".join(f"{r:.3f}" for r in c.get("macs_ratios", [])),
            "; ".join(sorted({_widths(w) for w in c.get("widths", [])})),
        ]
        for c in d.get("cells", [])
    ]
    head = ["level", "method", "seeds", "worst", "clean", "student / teacher MACs", "widths"]
    lines += md_table(head, rows)
    for key, what in (
        ("missed", "not reported (refused, or over their level)"),
        ("not_run", "not run"),
    ):
        got = d.get(key) or []
        if got:
            lines += [
                f"Students {what}: "
                + ", ".join(
                    f"{r['method']} {r['level']} seed {r['seed']}"
                    + (" (refused)" if r.get("refused") else "")
                    for r in got
                )
                + ".",
                "",
            ]
    return lines + tradeoff_targets(d, "level", resolved=True)


def _widths(w: Dict[str, int]) -> str:
    """{'0': 6, '3': 16} -> '6-16' (output channels of each layer, in order)."""
    return "-".join(str(v) for v in w.values())


def board(name: str, d: Json) -> List[str]:
    """benchmarks/board.py: one row per model and format, local and emulated latency."""
    lines: List[str] = []
    for wl, w in d.get("workloads", {}).items():
        emu = w.get("emulated_qemu_aarch64") or {}
        settings = {m.get("pgd_setting") for m in w["models"].values()}
        lines += [
            f"Workload `{wl}`; robust = {', '.join(sorted(s for s in settings if s))}; p50 / p99 "
            "on `local` (int8 TFLite, 1 thread, median of the rounds); qemu-aarch64 p50 is "
            "EMULATED (emulation cost, not a board's latency).",
            "",
        ]
        rows = []
        for model, m in w["models"].items():
            for fmt, r in (m.get("local") or {}).items():
                q = emu.get(f"{model} {fmt}") or {}
                rows.append(
                    [
                        model,
                        fmt,
                        num(m.get("macs")),
                        num(r.get("model_bytes")),
                        num(r.get("flash_bytes")),
                        f"{1000 * r['p50_ms']:.2f}",
                        f"{1000 * r['p99_ms']:.2f}",
                        "-" if "p50_ms" not in q else f"{q['p50_ms']:.2f}",
                        num(r.get("peak_rss_mb")),
                        pct(m.get("clean")),
                        pct(m.get("pgd")),
                    ]
                )
        head = ["model", "format", "MACs", "file B", "flash B (xz)", "p50 us", "p99 us"]
        head += ["qemu p50 ms (EMULATED)", "peak RSS MiB", "clean %", "robust %"]
        lines += md_table(head, rows)
        lines += targets_list(w.get("targets") or {})
    return lines


def targets_list(targets: Json) -> List[str]:
    out = []
    for key, t in targets.items():
        facts = ", ".join(f"{k} {num(v)}" for k, v in t.items() if k not in ("target", "met"))
        out.append(
            f"- `{key}`: {t.get('target')}: **{'met' if t.get('met') else 'missed'}** ({facts})"
        )
    return out + [""] if out else []


def demo(name: str, d: Json) -> List[str]:
    """benchmarks/demo_student.py: the demo's headline student on the host and the board."""
    host, brd, demo_run = d["host"], d["board"], d.get("demo", {})
    load = demo_run.get("load_1min", {})
    lines = [
        f"`make demo` ({demo_run.get('recipe')}): {num(demo_run.get('wall_s'))} s wall, "
        f"{num(demo_run.get('cpu_s'))} s CPU (every process) at a load of "
        f"{load.get('min')}-{load.get('max')}. Student `{d.get('student')}`, eps {d.get('eps')}.",
        "",
    ]
    rows = [
        [
            "host: " + host["where"],
            pct(host["clean"]),
            pct(host["worst"]),
            f"{host['suite']} suite: "
            + ", ".join(f"{k} {pct(v)}" for k, v in host["per_attack"].items()),
            host["n"],
        ],
        [
            "board: " + brd["where"],
            pct(brd["clean"]),
            pct(brd["worst"]),
            brd["label"] + ": " + ", ".join(f"{k} {pct(v)}" for k, v in brd["per_attack"].items()),
            brd["n"],
        ],
    ]
    lines += md_table(["where", "clean %", "worst case %", "attacks", "images"], rows)
    ref, tgt = d.get("tfmot_reference", {}), d.get("board_target", {})
    margins = d.get("verdicts", {}).get("margins_points", {})
    lines += [
        f"Reference (TF-MOT path, measured outside this project): clean {pct(ref.get('clean'))}, "
        f"worst {pct(ref.get('worst'))} ({ref.get('attacks')}). Board targets: clean >= "
        f"{pct(tgt.get('clean'))}, worst >= {pct(tgt.get('worst'))}. Margins (points): "
        + ", ".join(f"{k} {v:+.1f}" for k, v in margins.items())
        + ".",
        "",
    ]
    return lines


def manifold(name: str, d: Json) -> List[str]:
    """benchmarks/manifold.py: clean / on-manifold / PGD / corruptions per training, seeds."""
    lines = [
        "Mean ± std over the seeds, %. On-manifold: the latent attack (class-conditional VAE) "
        "scored on the VAE's reconstructions; PGD: Linf; corr.: mean over the corruptions.",
        "",
    ]
    for data in dict.fromkeys(c["data"] for c in d.get("cells", [])):
        s = d.get("settings", {}).get(data, {})
        lines += [f"`{data}`: " + ", ".join(f"{k} {v}" for k, v in s.items()), ""]
        rows = [
            [
                c["adversary"],
                "dense" if not c["sparsity"] else f"{c['sparsity']:g}",
                pct(c["clean"], c.get("clean_std")),
                pct(c["onmanifold"], c.get("onmanifold_std")),
                pct(c["pgd"], c.get("pgd_std")),
                pct(c.get("corruption_mean"), c.get("corruption_mean_std")),
            ]
            for c in d["cells"]
            if c["data"] == data
        ]
        lines += md_table(["training", "sparsity", "clean", "on-manifold", "PGD", "corr."], rows)
        lines += manifold_claim(data, (d.get("claim") or {}).get(data) or {})
    return lines


def manifold_claim(data: str, claim: Json) -> List[str]:
    """Paper 2's claim per sparsity: on-manifold AT vs the best off-manifold AT method on the
    on-manifold attack (a margin counts when it exceeds the sum of the two stds)."""
    cells = {k: v for k, v in claim.items() if isinstance(v, dict)}
    if not cells:
        return []
    rows = [
        [
            "dense" if not float(sp) else sp,
            pct(c["onmanifold_at"], c.get("onmanifold_at_std")),
            f"{c['best_off_method']} {pct(c['best_off_at'], c.get('best_off_at_std'))}",
            f"{100 * c['margin']:+.1f}",
            f"{100 * c['spread']:.1f}",
            "yes" if c.get("resolved") else "no",
        ]
        for sp, c in cells.items()
    ]
    head = ["sparsity", "on-manifold AT", "best off-manifold AT", "margin (pts)", "spread (pts)"]
    verdict = [
        f"`{data}`: on-manifold AT ahead at every sparsity: "
        f"{'yes' if claim.get('holds_at_every_sparsity') else 'no'}; the margin grows with "
        f"sparsity: {'yes' if claim.get('margin_grows_with_sparsity') else 'no'}.",
        "",
    ]
    return (
        ["On-manifold robust accuracy, paper 2's comparison:", ""]
        + md_table([*head, "beyond the spread"], rows)
        + verdict
    )


def scale(name: str, d: Json) -> List[str]:
    """benchmarks/scale.py: DDP throughput and the Ray sweep against serial."""
    ddp, ray = d.get("ddp", {}), d.get("ray", {})
    rows = [
        [
            f"DDP: {ddp.get('setup', {}).get('model')}, {ddp.get('setup', {}).get('adversary')}",
            " / ".join(
                f"{r['processes']} proc {r['samples_per_s']:.1f} samples/s"
                for r in ddp.get("runs", [])
            ),
            f"{ddp.get('speedup_2_vs_1', 0):.2f}x",
            f">= {ddp.get('target')}x",
            "met" if ddp.get("met") else "missed",
        ],
        [
            f"Ray sweep: {ray.get('setup', {}).get('students')} students",
            " / ".join(f"{r['executor']} {r['wall_s']:.0f} s" for r in ray.get("runs", [])),
            f"{ray.get('ray_vs_serial', 0):.2f}x",
            f"<= {ray.get('target')}x",
            "met" if ray.get("met") else "missed",
        ],
    ]
    return md_table(["measurement", "runs", "ratio", "target", "verdict"], rows)


def mutation(name: str, d: Json) -> List[str]:
    rows = [
        [m, v.get("mutants"), v.get("killed"), v.get("survived"), pct(v.get("killed_fraction"))]
        for m, v in d.get("modules", {}).items()
    ]
    lines = [f"{d.get('tool')}; target: {pct(d.get('target_killed_fraction'))} % killed.", ""]
    return lines + md_table(["module", "mutants", "killed", "survived", "killed %"], rows)


def _scalar_columns(rows: List[Json], limit: int = 12) -> List[str]:
    cols: List[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in cols and not isinstance(v, (dict, list)) and k != "run":
                cols.append(k)
    return cols[:limit]


def generic(name: str, d: Any) -> List[str]:
    """Any other JSON: its headers/rows table, or its first list of records, or its scalars."""
    if isinstance(d, dict) and isinstance(d.get("table"), dict):
        d = {**d, **d["table"]}
    if isinstance(d, dict) and d.get("headers") and isinstance((d.get("rows") or [None])[0], list):
        return md_table(d["headers"], [[num(c) for c in r] for r in d["rows"]])
    for key in ("summary", "cells", "rows", "results", "trace"):
        rows = d.get(key) if isinstance(d, dict) else None
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):
            cols = _scalar_columns(rows)
            table = md_table(cols, [[cell(c, r.get(c)) for c in cols] for r in rows[:60]])
            more = [f"({len(rows) - 60} more rows in the file.)", ""] if len(rows) > 60 else []
            return table + more
    scalars = {k: v for k, v in d.items() if not isinstance(v, (dict, list))}
    return md_table(["key", "value"], [[k, cell(k, v)] for k, v in scalars.items()])
