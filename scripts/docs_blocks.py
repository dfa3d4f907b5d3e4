"""Generated blocks inside the hand-written pages (docs/*.md): scripts/gen_results.py fills them.

A block is

    <!-- generated: NAME -->
    ...lines written by the script...
    <!-- end generated -->

where NAME is ``measured FILE.json`` (that file's table, as on docs/results.md, with its
provenance line), ``provenance FILE.json`` (the provenance line alone) or one of the named
renderers in ``RENDERERS`` (a table or a sentence that quotes figures). Prose outside the blocks
carries no measured figure (tests/test_docs_numbers.py); a page that quotes a number quotes it
from a block.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from docs_budgets import budget_shape, inner_sparsity
from docs_compress import (
    compression_traces,
    diagnosis_seed_rows,
    diagnosis_summary,
    push90_more,
    synthetic_budgets,
)
from results_render import Json, md_table, num, pct

BLOCK = re.compile(r"(<!-- generated: (.+?) -->\n)(.*?)(<!-- end generated -->)", re.S)
Renderer = Callable[[Path], List[str]]
SUITE_TARGET_S = 7 * 60  # issue 25: make test within 7 minutes on 2 cores (a requirement)


def _load(measured: Path, name: str) -> Json:
    return json.loads((measured / name).read_text())


def _s(v: float) -> str:
    """Seconds as '12 min 7 s' or '46.5 s'."""
    return f"{int(v // 60)} min {v % 60:.0f} s" if v >= 60 else f"{v:.1f} s"


def test_suite(measured: Path) -> List[str]:
    """benchmarks/test_suite.py: make test's pytest line, timed, and its 20 slowest tests."""
    path = measured / "test_suite.json"
    if not path.is_file():
        return ["Not measured yet: `benchmarks/test_suite.py` writes `test_suite.json`.", ""]
    d = json.loads(path.read_text())
    hw = d.get("hardware")
    if isinstance(hw, dict):
        hw = f"{hw.get('cores', '?')}-core {hw.get('cpu', '?')} {hw.get('machine', '')}".strip()
    before, after = d.get("load_before") or ["?"], d.get("load_after") or ["?"]
    fields = [
        ("command", f"`{d['command']}`" if "command" in d else None),
        ("wall time", _s(d["wall_s"]) if "wall_s" in d else None),
        ("CPU time (every process)", _s(d["cpu_s"]) if "cpu_s" in d else None),
        ("passed / failed / skipped", "{} / {} / {}".format(
            d.get("passed", "?"), d.get("failed", "?"), d.get("skipped", "?"))),
        ("workers", d.get("workers")),
        ("1-minute load before / after", d.get("load", f"{before[0]} / {after[0]}")),
        ("hardware", hw),
        ("date, commit", f"{d.get('date', '?')}, `{d.get('commit', '?')}`"),
    ]  # fmt: skip
    if "wall_s" in d:
        met = "met" if d["wall_s"] <= SUITE_TARGET_S else "missed"
        fields.append((f"issue 25's target: wall <= {_s(SUITE_TARGET_S)} on 2 cores", met))
    lines = md_table(["make test", "measured"], [[k, num(v)] for k, v in fields if v is not None])
    slowest = d.get("slowest") or []
    if slowest:
        phase = any("phase" in r for r in slowest)
        rows = [
            [i, f"{r.get('seconds', 0):.2f} s", *([r.get("phase", "?")] if phase else []),
             f"`{r.get('test')}`"]
            for i, r in enumerate(slowest, 1)
        ]  # fmt: skip
        lines += [f"The {len(slowest)} slowest tests of that run (setup + call + teardown):", ""]
        lines += md_table(["#", "time", *(["phase"] if phase else []), "test"], rows)
    return lines


def _kib(v: object) -> str:
    return f"{v / 1024:.1f}" if isinstance(v, (int, float)) else "-"


def _of(r: Json, t: Json, key: str) -> str:
    return f"{100 * r[key] / t[key]:.1f}" if r.get(key) and t.get(key) else "-"


def mcu_rows(measured: Path) -> List[str]:
    """benchmarks/mcu.py: one row per model (teacher and students), whatever rows the file has,
    and issue 26's targets per student (half the arena, a quarter of the flash, worst case
    within 3 points of the teacher's) computed from the rows."""
    d = _load(measured, "mcu.json")
    rows = d.get("rows", [])
    t = next((r for r in rows if r.get("kind") == "teacher"), rows[0] if rows else {})
    out, verdicts = [], []
    for r in rows:
        v = r.get("vela") or {}
        out.append(
            [r.get("model"), _kib(r.get("arena_bytes")), _of(r, t, "arena_bytes"),
             _kib(r.get("arena_head")), _kib(r.get("tflm_flash_bytes")),
             _of(r, t, "tflm_flash_bytes"), _kib(r.get("lut_flash_bytes")),
             pct(r.get("tflm_clean")), pct(r.get("tflm_transfer")), pct(r.get("tflm_square")),
             pct(r.get("tflm_worst_case")), pct(r.get("parity_same_class")),
             pct(r.get("parity_bit_identical")),
             f"{_kib(v.get('sram_bytes'))} / {_kib(v.get('flash_bytes'))}", v.get("time_ms", "-"),
             ", ".join(k for k, ok in (r.get("fits") or {}).items() if ok) or "none"]
        )  # fmt: skip
        if r is not t and t.get("arena_bytes") and t.get("tflm_flash_bytes"):
            met = [
                r.get("arena_bytes", 0) <= t["arena_bytes"] / 2,
                r.get("tflm_flash_bytes", 0) <= t["tflm_flash_bytes"] / 4,
                100 * (t.get("tflm_worst_case", 1) - r.get("tflm_worst_case", 0)) <= 3 + 1e-9,
            ]
            verdicts.append([r.get("model"), *("met" if m else "missed" for m in met)])
    head = ["model", "arena KiB", "arena % of teacher", "arena head KiB", "flash KiB"]
    head += ["flash % of teacher", "LUT flash KiB", "clean %", "PGD transfer %", "Square %"]
    head += ["worst case %", "same class as TFLite %", "bit-identical %"]
    head += ["vela SRAM / flash KiB (ESTIMATE)", "vela ms (ESTIMATE)", "fits"]
    tail = [
        f"Worst case: {t.get('worst_case_label', '?')} ({t.get('weaker', 'default settings')}). "
        f"Run: {num(d.get('wall_s'))} s wall, {num(d.get('cpu_s'))} s CPU; {d.get('host', '')}.",
        "",
    ]
    targets = md_table(
        ["student", "arena <= 1/2", "flash <= 1/4", "worst case >= teacher's - 3"], verdicts
    )
    all3 = [v[0] for v in verdicts if v[1:] == ["met"] * 3]
    targets += [f"Students meeting all three: {', '.join(all3) or 'none'}.", ""]
    lines = md_table(head, out) + tail + ["Issue 26's targets per student:", ""] + targets
    return lines + mcu_recheck(rows, t)


def mcu_recheck(rows: List[Json], t: Json) -> List[str]:
    """benchmarks/mcu.py --recheck-n: the rows benched again with Square (so the worst case)
    on more images, and each student's worst case against the teacher's on as many."""
    again = [r for r in rows if r.get("recheck")]
    if not again:
        return []
    n = (t.get("recheck") or {}).get("worst_case_n")
    out = []
    for r in again:
        c = r["recheck"]
        gap = "-"
        if r is not t and n and c.get("worst_case_n") == n:
            gap = f"{100 * (t['recheck']['tflm_worst_case'] - c['tflm_worst_case']):.1f}"
        out.append([r.get("model"), c.get("worst_case_n"), pct(c.get("tflm_transfer")),
                    pct(c.get("tflm_square")), pct(c.get("tflm_worst_case")), gap])  # fmt: skip
    head = ["model", "images", "PGD transfer %", "Square %", "worst case %"]
    head.append("points below the teacher")
    label = again[0]["recheck"].get("worst_case_label", "?")
    return [
        "Re-checked on more images (`--recheck-n`; same models and attacks, Square and the "
        f"worst case on every image: {label}):",
        "",
        *md_table(head, out),
        "",
    ]


def ci_smoke(measured: Path) -> List[str]:
    """benchmarks/ci_smoke.py: the warm smoke's time, false alarms, and the regressions caught."""
    d = _load(measured, "ci_smoke.json")
    rows = [
        ["warm" if not s.get("cold") else "cold", _s(s["seconds"]["total"]), s.get("check_rc")]
        for s in d.get("smoke", [])
    ]
    lines = md_table(["cache", "smoke (restore + bench + check)", "check exit"], rows)
    noise = d.get("noise", {})
    lines += [
        f"Target for the warm smoke: under {d.get('target_warm_s')} s. Unchanged student re-run "
        f"{noise.get('reruns')} times: {noise.get('false_alarms')} false alarms.",
        "",
    ]
    power = [
        [k, "yes" if v.get("fired") else "no", v.get("robust_detail")]
        for k, v in d.get("power", {}).items()
    ]
    return lines + md_table(["weaker student", "gate fired", "robust accuracy"], power)


def planted_bugs(measured: Path) -> List[str]:
    """benchmarks/bugs.py: how many planted bugs the related tests kill, and how long it took."""
    d = _load(measured, "planted_bugs.json")
    s = d.get("summary", {})
    secs = sorted(b["seconds"] for b in d.get("bugs", []) if isinstance(b.get("seconds"), float))
    rows = [[s.get("bugs"), s.get("killed"), s.get("survived"), pct(s.get("kill_ratio"))]]
    lines = md_table(["bugs", "killed", "survived", "kill ratio %"], rows)
    if secs:
        lines += [
            f"One bug at a time against its related tests: {secs[0]:.0f}-{secs[-1]:.0f} s each "
            f"(median {secs[len(secs) // 2]:.0f} s), {_s(sum(secs))} for all; commit "
            f"{d.get('commit')}; load {d.get('load_before', ['?'])[0]} before, "
            f"{d.get('load_after', ['?'])[0]} after.",
            "",
        ]
    return lines


def scale_nodes(measured: Path) -> List[str]:
    """benchmarks/scale.py: nodes x processes throughput, the 2-node Ray cluster sweep and the
    local Ray instance, each against its baseline."""
    d = _load(measured, "scale.json")
    nodes, cluster, ray = d.get("nodes", {}), d.get("cluster", {}), d.get("ray", {})
    layouts: Dict[str, List[Json]] = {}
    for r in nodes.get("runs", []):
        layouts.setdefault(f"{r['nodes']} x {r['processes_per_node']}", []).append(r)
    rows = [
        [k, ", ".join(f"{r['samples_per_s']:.1f}" for r in rs),
         ", ".join(f"{r['command_wall_s']:.1f} s" for r in rs),
         f"{(nodes.get('best_samples_per_s') or {}).get(k.replace(' x ', 'x'), 0):.1f}"]
        for k, rs in layouts.items()
    ]  # fmt: skip
    lines = md_table(["nodes x processes", "samples/s (per round)", "command wall", "best"], rows)
    lines += [
        f"2 x 1 / 1 x 2 = **{nodes.get('two_nodes_vs_one_node_2proc', 0):.2f}** (target >= "
        f"{nodes.get('target')}: {'met' if nodes.get('met') else 'missed'}).",
        "",
    ]
    earlier = [e["cluster"] for e in d.get("earlier", []) if isinstance(e.get("cluster"), dict)]
    runs = [
        [r.get("executor"), src.get("setup", {}).get("student"), _s(r.get("wall_s", 0)),
         "{:.0f}-{:.0f} s".format(min(r["student_seconds"]), max(r["student_seconds"]))
         if r.get("student_seconds") else "-"]
        for src in (*earlier, cluster, ray) for r in src.get("runs", [])
    ]  # fmt: skip
    lines += md_table(["executor", "student", "sweep wall", "one student"], runs)
    return lines + [
        f"Ray cluster (2 nodes) vs serial: {cluster.get('cluster_vs_serial', 0):.2f}x; local "
        f"Ray instance ({ray.get('setup', {}).get('ray_cpus')} CPUs) vs serial: "
        f"{ray.get('ray_vs_serial', 0):.2f}x (target <= {ray.get('target')}x: "
        f"{'met' if ray.get('met') else 'missed'}).",
        "",
    ]


def ci_failure_lines(measured: Path) -> List[str]:
    """The regression gate's FAIL lines on ci_smoke's weaker students, as check printed them."""
    d = _load(measured, "ci_smoke.json")
    fails = [f for v in d.get("power", {}).values() for f in v.get("failures", [])]
    return [f"    FAIL {f}" for f in fails[:2]] + [""]


def vm_boards(measured: Path) -> List[str]:
    """benchmarks/device.py: the full-system VM boards (image, boot) and every target's upload
    and peak RSS from the same bench."""
    d = _load(measured, "device.json")
    rows = []
    for name, v in (d.get("vm") or {}).items():
        rows.append(
            [f"`{name}`", v.get("kernel"), f"{v.get('build_s', 0):.0f} s",
             f"{v.get('disk_used_mb', 0):.0f} / {v.get('disk_mb', 0):,} MiB",
             f"{v.get('kernel_mb', 0):.1f} MiB + {v.get('initrd_kb', 0) / 1024:.1f} MiB",
             f"{v.get('first_boot_s', 0):.1f} s / {v.get('boot_s', 0):.1f} s"]
        )  # fmt: skip
    lines = md_table(
        ["VM", "kernel", "image build", "disk used / size", "kernel + initramfs",
         "first boot / a boot (to SSH answering)"], rows)  # fmt: skip
    head = d.get("headers") or []
    if {"target", "peak RSS MiB", "upload s"} <= set(head):
        t, rss, up = (head.index(k) for k in ("target", "peak RSS MiB", "upload s"))
        bench = [[r[t], num(r[rss]), num(r[up])] for r in d.get("rows", [])]
        lines += md_table(["target (same bundle)", "peak RSS MiB", "upload + verify s"], bench)
    return lines


def xz_vs_gzip(measured: Path) -> List[str]:
    """benchmarks/bundle_compression.py: how much smaller xz stores each int8 file than gzip."""
    rows = _load(measured, "bundle_compression.json").get("rows", [])
    ratios = sorted(r["xz_vs_gzip"] for r in rows if "xz_vs_gzip" in r)
    if not ratios:
        return []
    return [
        f"Measured on {len(ratios)} int8 `.tflite` files (dense and sparse-encoded): xz stores "
        f"each {100 * (1 - ratios[-1]):.1f}-{100 * (1 - ratios[0]):.1f} % smaller than "
        "gzip -9 (`benchmarks/measured/bundle_compression.json`).",
        "",
    ]


def emulation_slowdown(measured: Path) -> List[str]:
    """benchmarks/board.py: qemu-aarch64's p50 over the local p50 of each model, per board file."""
    ratios: List[float] = []
    names = []
    for path in sorted(measured.glob("board*.json")):
        d, before = json.loads(path.read_text()), len(ratios)
        for w in (d.get("workloads") or {}).values():
            emu = w.get("emulated_qemu_aarch64") or {}
            for model, m in w.get("models", {}).items():
                for fmt, r in (m.get("local") or {}).items():
                    q = emu.get(f"{model} {fmt}") or {}
                    if q.get("p50_ms") and r.get("p50_ms"):
                        ratios.append(q["p50_ms"] / r["p50_ms"])
        names += [f"`{path.name}`"] if len(ratios) > before else []
    if not ratios:
        return []
    return [
        f"In the board benchmarks ({', '.join(names)}), qemu-aarch64's p50 is "
        f"{min(ratios):.0f}-{max(ratios):.0f}x the local p50 of the same model, over "
        f"{len(ratios)} models and formats.",
        "",
    ]


RENDERERS: Dict[str, Renderer] = {
    "emulation_slowdown": emulation_slowdown,
    "compression_traces": compression_traces,
    "diagnosis_summary": diagnosis_summary,
    "diagnosis_seed_rows": diagnosis_seed_rows,
    "push90_more": push90_more,
    "synthetic_budgets": synthetic_budgets,
    "budget_shape": budget_shape,
    "inner_sparsity": inner_sparsity,
    "vm_boards": vm_boards,
    "xz_vs_gzip": xz_vs_gzip,
    "ci_failure_lines": ci_failure_lines,
    "test_suite": test_suite,
    "mcu_rows": mcu_rows,
    "ci_smoke": ci_smoke,
    "planted_bugs": planted_bugs,
    "scale_nodes": scale_nodes,
}


def render(name: str, measured: Path, file_body: Callable[[str, bool], List[str]]) -> List[str]:
    """The lines of block NAME; ``file_body(FILE, with_table)`` renders a ``measured`` or
    ``provenance`` block."""
    kind, _, fname = name.partition(" ")
    if kind in ("measured", "provenance"):
        if not (measured / fname.strip()).is_file():
            raise SystemExit(f"generated block '{name}': no benchmarks/measured/{fname}")
        return file_body(fname.strip(), kind == "measured")
    if name not in RENDERERS:
        raise SystemExit(f"generated block '{name}': no such renderer ({', '.join(RENDERERS)})")
    return RENDERERS[name](measured)


def fill(text: str, measured: Path, file_body: Callable[[str, bool], List[str]]) -> str:
    """TEXT with every generated block re-rendered."""

    def one(m: re.Match) -> str:
        body = "\n".join(render(m.group(2).strip(), measured, file_body)).rstrip() + "\n"
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(one, text)


def strip_blocks(text: str) -> str:
    """TEXT without the contents of its generated blocks (what a person wrote)."""
    return BLOCK.sub(lambda m: m.group(1) + m.group(4), text)


def pages(root: Path) -> List[Path]:
    """The hand-written pages that may hold blocks (docs/api.md and docs/cli are generated
    whole by their own scripts; docs/results.md by gen_results)."""
    skip = {"api.md", "results.md"}
    return [p for p in sorted((root / "docs").glob("*.md")) if p.name not in skip]


def blocks(text: str) -> List[Tuple[str, str]]:
    """(name, body) of every generated block in TEXT."""
    return [(m.group(2).strip(), m.group(3)) for m in BLOCK.finditer(text)]
