"""`build_report`: run folders -> one self-contained HTML page + a Markdown summary.

Tables are built once (header + rows of strings) and rendered to both formats. Figures are
PNGs embedded as base64 ``data:`` URIs: the page references no external URL.
"""

from __future__ import annotations

import base64
import html
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from robustedge.io import write_text
from robustedge.report import mcu as report_mcu
from robustedge.report import plots
from robustedge.report.collect import (
    BOARD_METRICS,
    RunInfo,
    Win,
    find_runs,
    headline,
    headline_pgd,
    recipe_notes,
    robust_key,
    suite_label,
    teacher_of,
    teacher_wins,
)

logger = logging.getLogger(__name__)


@dataclass
class Table:
    title: str
    header: List[str]
    rows: List[List[str]]
    note: str = ""


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
                _pct(head.acc if head else None),
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
    return Table("Accuracy vs compression (PyTorch, test split)", header, rows, note)


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
                f"{d.get('backend', '-')} {d.get('backend_version', '')} ({d.get('kernels', '')})",
                _pct(d.get("accuracy", {}).get("clean")),
                *board_robust_cells(d),
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


def board_robust_cells(d: dict) -> List[str]:
    """The device table's robust cells (worst case, transfer, Square), each naming its attack
    and budget, and the 'weaker than default' label where it applies."""
    from robustedge.device.board.measure import square_name, weaker_than_default

    acc = d.get("accuracy", {})
    n_total = (d.get("n_eval") or {}).get("clean")
    sq = next((a for a in d.get("robust", []) if a.get("attack") == "square"), None)
    wc = d.get("worst_case")
    worst = "-"
    if wc:
        worst = f"{100 * wc['acc']:.1f} ({wc['label']})" + (
            f"; {wc['weaker']}" if wc.get("weaker") else ""
        )
    tr = acc.get("transfer")
    t_name = (wc or {}).get("transfer_name") or "PGD transfer"  # the transfer set is PGD's
    transfer = "-" if tr is None else f"{100 * tr:.1f} ({t_name}, n={n_total})"
    square = "-"
    if sq:
        q, restarts = int(sq["n_queries"]), int(sq.get("restarts") or 1)
        name = sq.get("name") or square_name(q, restarts)
        total = sq.get("n_total") or n_total or sq["n"]
        weaker = sq.get("weaker", weaker_than_default(q, restarts, sq["n"], total))
        square = f"{100 * sq['acc']:.1f} ({name} on-board, n={sq['n']} of {total})" + (
            f"; {weaker}" if weaker else ""
        )
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
    tables = [models_table(runs), export_table(runs), device_table(runs)]
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


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;
max-width:1200px}
h1{margin-bottom:0}.stamp{color:#777;margin-top:4px}
table{border-collapse:collapse;margin:8px 0 4px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.note{color:#555;font-size:12px}img{max-width:100%;border:1px solid #eee;margin:6px 0}
pre{background:#f6f8fa;padding:10px;font-size:12px}
"""


def render_html(title, stamp, summary, tables, figures, notes) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1><p class='stamp'>generated {e(stamp)} from the runs' JSON files</p>",
        f"<pre>{e(chr(10).join(summary))}</pre>",
    ]
    for cap, png in figures:
        data = base64.b64encode(png).decode()
        parts.append(f"<h2>{e(cap)}</h2><img alt='{e(cap)}' src='data:image/png;base64,{data}'>")
    for t in tables:
        parts.append(f"<h2>{e(t.title)}</h2>")
        if not t.rows:
            parts.append("<p class='note'>none in these runs</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.header) + "</tr>")
        for row in t.rows:
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>" + (f"<p class='note'>{e(t.note)}</p>" if t.note else ""))
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_md(title, stamp, summary, tables, notes, html_name) -> str:
    lines = [
        f"# {title}",
        "",
        f"Generated {stamp}; figures in `{html_name}`.",
        "",
        "```",
        *summary,
        "```",
        "",
    ]
    for t in tables:
        lines += [f"## {t.title}", ""]
        if not t.rows:
            lines += ["none in these runs", ""]
            continue
        lines.append("| " + " | ".join(t.header) + " |")
        lines.append("|" + "---|" * len(t.header))
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in t.rows]
        lines += (["", f"{t.note}"] if t.note else []) + [""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)
