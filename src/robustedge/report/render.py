"""Rendering of the report's tables: :class:`Table` (header + rows of cells, a :class:`Note`
cell stating a long description once) to HTML and Markdown, and the page around them."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Dict, List, Tuple, Union


@dataclass(frozen=True)
class Note:
    """A cell whose long description is stated once: the HTML page shows ``value`` with a
    marker and defines ``note`` once under its table; the Markdown keeps ``md`` in the cell
    (``value (note)`` unless given), so each Markdown row stays self-describing."""

    value: str
    note: str
    md: str = ""

    def __str__(self) -> str:
        return self.md or f"{self.value} ({self.note})"


Cell = Union[str, Note]


@dataclass
class Table:
    """Header + rows of cells, rendered to HTML and Markdown. ``html_hide``: columns the HTML
    leaves out (their content is in a Note); ``groups``: HTML header groups as (label, number
    of columns), with ``short`` the HTML column names under them."""

    title: str
    header: List[str]
    rows: List[List[Cell]]
    note: str = ""
    html_hide: Tuple[str, ...] = ()
    groups: List[Tuple[str, int]] = field(default_factory=list)
    short: List[str] = field(default_factory=list)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;
max-width:1340px}
h1{margin-bottom:0}.stamp{color:#777;margin-top:4px}
table{border-collapse:collapse;margin:8px 0 4px;font-size:12.5px}
th,td{border:1px solid #ccc;padding:3px 5px;text-align:right}
td{white-space:nowrap}th{background:#f0f3f7;font-weight:600}th[colspan]{text-align:center}
td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}sup{color:#1f5fa8;font-weight:600}
.note{color:#555;font-size:12px;max-width:1300px}
img{max-width:100%;border:1px solid #eee;margin:6px 0}
ul.legend{font-size:12px;color:#333;margin:2px 0 8px;padding-left:18px;max-width:1300px}
"""


def _marker(i: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa: the legend's marks."""
    return _marker(i // 26 - 1) + chr(97 + i % 26) if i >= 26 else chr(97 + i)


def render_table_html(t: Table) -> List[str]:
    """A table with each long description (Note) stated once, in a legend under it."""
    e = html.escape
    keep = [i for i, h in enumerate(t.header) if h not in t.html_hide]
    names = t.short or t.header  # short names index like header
    legend: Dict[str, str] = {}
    out = ["<table>"]
    if t.groups and any(g for g, _ in t.groups):
        out.append(
            "<tr>" + "".join(f"<th colspan='{n}'>{e(g)}</th>" for g, n in t.groups) + "</tr>"
        )
    out.append("<tr>" + "".join(f"<th>{e(names[i])}</th>" for i in keep) + "</tr>")
    for row in t.rows:
        cells = []
        for i in keep:
            c = row[i]
            if isinstance(c, Note):
                mark = legend.setdefault(c.note, _marker(len(legend)))
                cells.append(f"<td>{e(c.value)}<sup>{mark}</sup></td>")
            else:
                cells.append(f"<td>{e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if legend:
        items = "".join(f"<li><sup>{m}</sup> {e(n)}</li>" for n, m in legend.items())
        out.append(f"<ul class='legend'>{items}</ul>")
    return out + ([f"<p class='note'>{e(t.note)}</p>"] if t.note else [])


def render_html(title, stamp, summary, tables, figures, notes) -> str:
    """The page: the headline table first, then the figures, then the detailed tables."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1><p class='stamp'>generated {e(stamp)} from the runs' JSON files; "
        f"{e(summary[0])}</p>",
    ]
    head, rest = (tables[0], tables[1:]) if tables else (None, [])
    for t in [head] if head else []:
        parts += [f"<h2>{e(t.title)}</h2>", *render_table_html(t)]
    for cap, png in figures:
        data = base64.b64encode(png).decode()
        parts.append(f"<h2>{e(cap)}</h2><img alt='{e(cap)}' src='data:image/png;base64,{data}'>")
    for t in rest:
        parts.append(f"<h2>{e(t.title)}</h2>")
        if not t.rows:
            parts.append("<p class='note'>none in these runs</p>")
            continue
        parts += render_table_html(t)
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_md(title, stamp, summary, tables, notes, html_name) -> str:
    """The Markdown companion: the terminal summary, then the detailed tables with every
    description in its cell (rows stay self-describing for grep and diff), then the headline
    table that opens the HTML page."""
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
    for t in [*tables[1:], *tables[:1]]:
        lines += [f"## {t.title}", ""]
        if not t.rows:
            lines += ["none in these runs", ""]
            continue
        lines.append("| " + " | ".join(t.header) + " |")
        lines.append("|" + "---|" * len(t.header))
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in t.rows]
        lines += (["", f"{t.note}"] if t.note else []) + [""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)
