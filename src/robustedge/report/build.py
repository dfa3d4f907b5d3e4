"""`build_report`: run folders -> one self-contained HTML page + a Markdown summary.

Tables are built once (header + rows of strings) and rendered to both formats. Figures are
PNGs embedded as base64 ``data:`` URIs: the page references no external URL.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from robustedge.io import write_text
from robustedge.report import gates as report_gates
from robustedge.report import mcu as report_mcu
from robustedge.report import plots
from robustedge.report.collect import (
    BOARD_METRICS,
    RunInfo,
    Win,
    board_value,
    find_runs,
    headline,
    headline_pgd,
    recipe_notes,
    robust_key,
    suite_label,
    teacher_of,
    teacher_wins,
)
from robustedge.report.render import Cell, Note, Table, render_html, render_md

logger = logging.getLogger(__name__)


@dataclass
class Report:
    html_path: Path
    md_path: Path
    summary: str  # a few lines for the terminal


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:,}"


def models_table(runs: Sequence[RunInfo]) -> Table:
    cols = plots.metric_columns(runs)
    header = [
        "model",
        "method",
        "sparsity %",
        "params",
        "non-zero",
        "MACs (non-zero)",
        "robust % (headline)",
        "headline attack",
        *[f"{c} %" for c in cols],
    ]
    rows = []
    for r in runs:
        head = headline(r)
        rows.append(
            [
                r.name,
                r.family,
                f"{100 * r.sparsity:.1f}",
                _num(r.params),
                _num(r.nonzero),
                _num(r.macs),
                Note(_pct(head.acc), head.label, _pct(head.acc)) if head else "-",
                head.label if head else "-",
                *[_pct(plots.value(r, c)) for c in cols],
            ]
        )
    suites = {k: e for r in runs for k, e in r.suites.items()}
    note = (
        "robust % (headline): the worst case per image over the named attack suite (an image "
        "counts only if every attack of the suite fails on it) when the model has one, else "
        "the strongest single attack it was evaluated with; 'headline attack' names it. Every "
        "other accuracy column names its attack and eps"
        + "".join(f"; {k} = {suite_label(e)}" for k, e in sorted(suites.items()))
        + "."
    )
    return Table(
        "Accuracy vs compression (PyTorch, test split)",
        header,
        rows,
        note,
        html_hide=("headline attack",),
    )


def _kb(v: Optional[float]) -> str:
    return "-" if v is None else f"{v / 1000:,.1f}"


def _board_groups(runs: Sequence[RunInfo]) -> Dict[str, Dict[str, dict]]:
    """{target (and format where a target ran several): {model: its results.json}}."""
    fmts: Dict[str, set] = {}
    for _r, d in plots.device_rows(runs):
        fmts.setdefault(plots.target_label(d), set()).add(d.get("format"))
    groups: Dict[str, Dict[str, dict]] = {}
    for r, d in plots.device_rows(runs):
        tgt = plots.target_label(d)
        key = tgt if len(fmts[tgt]) == 1 else f"{tgt} {d.get('format')}"
        groups.setdefault(key, {})[r.name] = d
    return groups


def _win_marks(runs: Sequence[RunInfo]) -> set:
    return {(w.student, w.target, w.format, w.metric) for w in teacher_wins(runs)}


def _board_cells(r: RunInfo, d: dict, marks: set) -> List[Cell]:
    """A model's robust figure, p50, flash kB and peak RSS on one board; a star marks each
    metric on which the student beats the teacher (same target and format)."""

    def star(key: str, text: str) -> str:
        won = (r.name, plots.target_label(d), d.get("format"), key) in marks
        return f"{text} \u2605" if won else text

    p50 = board_value(d, "p50_ms")
    return [
        board_robust_notes(d)[0],
        star("p50_ms", "-" if p50 is None else f"{p50:.3g}"),
        star("flash_bytes", _kb(board_value(d, "flash_bytes"))),
        star("peak_rss_mb", f"{d.get('peak_rss_mb', '-')}"),
    ]


def headline_table(runs: Sequence[RunInfo]) -> Table:
    """One row per model: what it is, its size, clean and robust accuracy (the attack suite
    stated once, in the legend), and per board its robust figure, p50, flash and peak RSS,
    starred where the student beats the teacher."""
    groups, won, marks = _board_groups(runs), _wins_by_row(runs), _win_marks(runs)
    per = ["robust %", "p50 ms", "flash kB", "RSS MiB"]
    header = ["model", "method", "sparsity %", "MACs", "smallest file kB", "clean %", "robust %"]
    rows = []
    for r in runs:
        head = headline(r)
        size = min((a["bytes"] for a in r.export.values() if a.get("bytes")), default=None)
        row: List[Cell] = [r.name, r.family, f"{100 * r.sparsity:.1f}", _num(r.macs), _kb(size)]
        row += [_pct(r.clean), Note(_pct(head.acc), head.label) if head else "-"]
        beats = []
        for key, models in groups.items():
            d = models.get(r.name)
            row += ["-"] * len(per) if d is None else _board_cells(r, d, marks)
            win = d is not None and won.get((r.name, plots.target_label(d), d.get("format")))
            beats += [f"{key}: {win}"] if win else []
        rows.append(row + ["; ".join(beats) or "-"])
    header += [f"{key} {p}" for key in groups for p in per] + ["beats teacher"]
    return Table(
        "Headline",
        header,
        rows,
        "robust %: the model's headline figure on the host (PyTorch) and, per board, the worst "
        "case per image on that board; each is named in the legend. kB = 1,000 bytes. \u2605: "
        "the student beats the teacher on that metric on the same target and format (latency "
        "and RSS only beyond their noise margins). EMULATED boards ran under qemu: their "
        "latency is emulation cost, not a board's.",
        html_hide=("beats teacher",),
        groups=[("", 7), *[(k, len(per)) for k in groups]],
        short=[*header[:7], *per * len(groups), "beats teacher"],
    )


def export_table(runs: Sequence[RunInfo]) -> Table:
    header = [
        "model",
        "format",
        "bytes",
        "gzip bytes",
        "flash bytes",
        "MACs",
        "clean %",
        "transfer %",
        "max abs dlogit",
        "parity gate",
    ]
    rows = []
    for r in runs:
        by_file = {s.get("file"): s for s in r.ledger}
        for fmt, a in r.export.items():
            p, led = a.get("parity", {}), by_file.get(a.get("file"), {})
            gate = "off" if p.get("skipped") else ("pass" if p.get("passed") else "FAIL")
            diff = p.get("max_abs_logit_diff")
            rows.append(
                [
                    r.name,
                    fmt,
                    _num(a.get("bytes")),
                    _num(led.get("gzip_bytes")),
                    _num(led.get("flash_bytes")),
                    _num(led.get("macs")),
                    _pct(p.get("clean_acc")),
                    _pct(p.get("transfer_acc")),
                    "-" if diff is None else f"{diff:.3g}",
                    gate,
                ]
            )
    return Table(
        "Export ledger (size, MACs, parity with PyTorch per format)",
        header,
        rows,
        "transfer = accuracy on PGD examples crafted on the PyTorch model. flash bytes = the "
        "file as a bundle stores it (xz-compressed); bytes = what the interpreter loads.",
    )


def device_table(runs: Sequence[RunInfo]) -> Table:
    header = [
        "model",
        "target",
        "format",
        "backend",
        "clean %",
        "robust % (on board, worst case)",
        "transfer %",
        "Square %",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "flash bytes",
        "model bytes",
        "peak RSS MiB",
        "beats teacher on",
    ]
    rows = []
    won = _wins_by_row(runs)
    for r, d in plots.device_rows(runs):
        lat = d.get("latency") or {}
        rows.append(
            [
                r.name,
                plots.target_label(d),
                d.get("format", "-"),
                _backend(d),
                _pct(d.get("accuracy", {}).get("clean")),
                *board_robust_notes(d),
                *[f"{lat[k]:.4g}" if k in lat else "-" for k in ("p50_ms", "p90_ms", "p99_ms")],
                _num(d.get("flash_bytes", d.get("model_bytes"))),
                _num(d.get("model_bytes")),
                f"{d.get('peak_rss_mb', '-')}",
                won.get((r.name, plots.target_label(d), d.get("format")), "-"),
            ]
        )
    return Table(
        "On-device results per target",
        header,
        rows,
        "Three sizes per model: flash bytes (what the board stores: the compressed model), "
        "model bytes (what the interpreter loads) and peak RSS while running. 'beats teacher "
        "on' compares with the teacher on the same target and format (latency and RSS only "
        "beyond their noise margins). EMULATED rows ran under qemu: their latency says "
        "nothing about a real board (use them for correctness and relative comparisons only). "
        "robust (on board, worst case): an image counts only if the board classifies it "
        "correctly clean, on its transfer example (crafted on PyTorch) and after the on-board "
        "Square attack; each figure names its attacks, budgets and images, and settings below "
        "the default (Square-1000 on every image) are marked 'weaker than default'.",
    )


def _backend(d: dict) -> Note:
    name = f"{d.get('backend', '-')} {d.get('backend_version', '')}".strip()
    return Note(name, f"{name} kernels: {d.get('kernels', '')}", f"{name} ({d.get('kernels', '')})")


def board_robust_cells(d: dict) -> List[str]:
    """The device table's robust cells (worst case, transfer, Square), each naming its attack
    and budget, and the 'weaker than default' label where it applies."""
    return [str(c) for c in board_robust_notes(d)]


def board_robust_notes(d: dict) -> List[Cell]:
    """:func:`board_robust_cells` as Notes: the figure, and its attack, budget and images
    (with 'weaker than default' where it applies) as the description."""
    from robustedge.device.board.measure import square_name, weaker_than_default

    acc = d.get("accuracy", {})
    n_total = (d.get("n_eval") or {}).get("clean")
    sq = next((a for a in d.get("robust", []) if a.get("attack") == "square"), None)
    wc = d.get("worst_case")
    worst: Cell = "-"
    if wc:
        weak = f"; {wc['weaker']}" if wc.get("weaker") else ""
        value = f"{100 * wc['acc']:.1f}"
        worst = Note(value, f"{wc['label']}{weak}", f"{value} ({wc['label']}){weak}")
    tr = acc.get("transfer")
    t_name = (wc or {}).get("transfer_name") or "PGD transfer"  # the transfer set is PGD's
    transfer: Cell = "-" if tr is None else Note(f"{100 * tr:.1f}", f"{t_name}, n={n_total}")
    square: Cell = "-"
    if sq:
        q, restarts = int(sq["n_queries"]), int(sq.get("restarts") or 1)
        name = sq.get("name") or square_name(q, restarts)
        total = sq.get("n_total") or n_total or sq["n"]
        weaker = sq.get("weaker", weaker_than_default(q, restarts, sq["n"], total))
        value, what = f"{100 * sq['acc']:.1f}", f"{name} on-board, n={sq['n']} of {total}"
        weak = f"; {weaker}" if weaker else ""
        square = Note(value, what + weak, f"{value} ({what}){weak}")
    return [worst, transfer, square]


def _wins_by_row(runs: Sequence[RunInfo]) -> dict:
    """(student, target, format) -> 'flash -79%, p50 -12%' for the device table."""
    short = {"flash_bytes": "flash", "p50_ms": "p50", "peak_rss_mb": "RSS"}
    out: dict = {}
    for w in teacher_wins(runs):
        key = (w.student, w.target, w.format)
        text = f"{short[w.metric]} {100 * w.change:+.0f}%"
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def build_report(paths: Sequence[Path], out: Path, title: Optional[str] = None) -> Report:
    """Read the runs under ``paths`` and write ``out`` (HTML) and ``out`` with .md."""
    runs = find_runs(paths)
    notes = recipe_notes(paths)
    robust = robust_key(runs)
    tables = [headline_table(runs), models_table(runs), export_table(runs), device_table(runs)]
    gates = report_gates.gates_rows(paths)  # a recipe's gates: verdicts (docs/ci.md)
    if gates:
        tables.insert(1, Table(report_gates.TITLE, *gates, report_gates.NOTE))
    mcu = report_mcu.mcu_rows(runs)  # boards benched on tflm (docs/mcu.md)
    if mcu:
        tables.append(Table(report_mcu.TITLE, *mcu, report_mcu.NOTE))
    figures = _figures(runs, robust)
    title = title or "robustedge report"
    out = Path(out)
    md_path = out.with_suffix(".md")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    summary = _summary(runs, robust)
    write_text(out, render_html(title, stamp, summary, tables, figures, notes))
    write_text(md_path, render_md(title, stamp, summary, tables, notes, out.name))
    return Report(out, md_path, "\n".join(summary))


def _figures(runs: Sequence[RunInfo], robust: Optional[str]) -> List[Tuple[str, bytes]]:
    figs = [("Trade-off: accuracy vs sparsity per method", plots.tradeoff(runs))]
    lat = plots.latency(runs)
    if lat:
        figs.append(("Latency distribution per target", lat))
    par = plots.pareto(runs, robust) if robust else None
    if par:
        figs.append(
            (f"Pareto view: robust accuracy ({robust}) vs flash bytes, p50 latency, peak RSS", par)
        )
    return figs


def _summary(runs: Sequence[RunInfo], robust: Optional[str]) -> List[str]:
    lines = [
        f"{len(runs)} model(s); robust = the worst case per image over the named attack suite "
        "where a model has one, else its strongest single attack (named per model); figures "
        f"use {robust or 'none'}"
    ]
    heads = {r.name: headline(r) for r in runs}
    lines += [f"  {v}" for v in sorted({h.label for h in heads.values() if h and h.is_suite})]
    for r in runs:
        head = heads[r.name]
        dev = ", ".join(
            f"{plots.target_label(d)} p50 {d['latency']['p50_ms']:.3g} ms"
            for d in r.devices
            if d.get("latency")
        )
        size = min((a["bytes"] for a in r.export.values()), default=None)
        lines.append(
            f"  {r.name:<24} sparsity {100 * r.sparsity:5.1f}%  clean {_pct(r.clean):>5}%  "
            f"robust {_pct(head.acc if head else None):>5}% ({head.key if head else 'none'})"
            + (f"  smallest export {size:,} B" if size else "")
            + (f"  [{dev}]" if dev else "")
        )
    return lines + beats_teacher_lines(runs)


UNITS = {key: (label, unit) for key, label, unit, _m in BOARD_METRICS}


def _value(key: str, v: float) -> str:
    return f"{v:,.0f} B" if key == "flash_bytes" else f"{v:.4g} {UNITS[key][1]}"


def beats_teacher_lines(runs: Sequence[RunInfo]) -> List[str]:
    """The payoff in numbers: which students beat the teacher on which board metric (same
    target and format), by how much, and their robust accuracy (PGD eps 0.1, named) vs the
    teacher's."""
    teacher = teacher_of(runs)
    if teacher is None or not teacher.devices:
        return []
    wins = teacher_wins(runs)
    key = headline_pgd(runs)
    if not wins:
        return ["board: no student beats the teacher on flash bytes, p50 latency or peak RSS"]
    lines = ["board: students that beat the teacher (same target and format):"]
    by_student: dict = {}
    for w in wins:
        by_student.setdefault((w.student, w.target, w.format), []).append(w)
    accs = {r.name: r.accuracy.get(key) if key else None for r in runs}
    t_acc = accs.get(teacher.name)
    for (student, target, fmt), ws in by_student.items():
        parts = [_win_text(w) for w in ws]
        acc = accs.get(student)
        robust = f"robust ({key}) {_pct(acc)}% vs teacher {_pct(t_acc)}%" if key else "robust -"
        if acc is not None and t_acc is not None:
            robust += f" ({100 * (acc - t_acc):+.1f} pts)"
        lines.append(f"  {student} on {target} [{fmt}]: " + "; ".join(parts) + f"; {robust}")
    return lines


def _win_text(w: Win) -> str:
    label = UNITS[w.metric][0]
    return (
        f"{label} {_value(w.metric, w.student_value)} vs {_value(w.metric, w.teacher_value)} "
        f"({100 * w.change:+.1f}%)"
    )
