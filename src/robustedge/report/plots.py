"""Matplotlib figures of the report, returned as PNG bytes (Agg backend, no display)."""

from __future__ import annotations

import io
import logging
from typing import Dict, List, Optional, Sequence, Tuple

from robustedge.report.collect import (
    BOARD_METRICS,
    RunInfo,
    board_value,
    device_label,
    teacher_wins,
)

logger = logging.getLogger(__name__)
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def _plt():
    """pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _xscale(ax, values: Sequence[float]) -> None:
    """Log x axis only when the values span more than 10x; plain tick labels either way, on
    at most 1-2-5 ticks per decade (labels never run into each other)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    vals = [v for v in values if v > 0]
    plain = FuncFormatter(lambda v, _: f"{v:,.4g}")
    if vals and max(vals) / min(vals) > 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.xaxis.set_major_formatter(plain)


def display_unit(key: str, values: Sequence[float]) -> Tuple[str, float]:
    """The axis unit for a board metric and the factor from its stored unit: flash in kB
    (1,000 bytes), latency in us when every value is under 1 ms, else ms; RSS in MiB."""
    if key == "flash_bytes":
        return "kB", 1e-3
    if key == "p50_ms":
        return ("us", 1e3) if values and max(values) < 1.0 else ("ms", 1.0)
    return "MiB", 1.0


def metric_columns(runs: Sequence[RunInfo]) -> List[str]:
    """Accuracy columns present in any run: clean, attacks (sorted), corruptions."""
    keys = sorted({k for r in runs for k in r.accuracy}, key=_attack_order)
    cols = ["clean", *keys]
    if any(r.corruptions is not None for r in runs):
        cols.append("corruptions (mean)")
    return cols


def _attack_order(key: str) -> Tuple[int, str]:
    order = ("fgsm", "pgd", "square", "onmanifold")
    name = key.split()[0]
    return (order.index(name) if name in order else len(order), key)


def value(run: RunInfo, col: str) -> Optional[float]:
    if col == "clean":
        return run.clean
    if col == "corruptions (mean)":
        return run.corruptions
    return run.accuracy.get(col)


def tradeoff(runs: Sequence[RunInfo]) -> bytes:
    """Accuracy vs sparsity, one panel per metric, one line per method (teacher dashed)."""
    cols = metric_columns(runs)
    n = len(cols)
    ncol = min(3, n)
    nrow = (n + ncol - 1) // ncol
    fig, axes = _plt().subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    families = sorted({r.family for r in runs if r.role != "teacher"})
    for ax, col in zip(axes.flat, cols):
        for i, fam in enumerate(families):
            pts = sorted(
                (r.sparsity, value(r, col))
                for r in runs
                if r.family == fam and value(r, col) is not None
            )
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, [100 * y for y in ys], "o-", color=COLORS[i % len(COLORS)], label=fam)
        for r in runs:
            if r.role == "teacher" and value(r, col) is not None:
                ax.axhline(100 * value(r, col), color="grey", ls="--", lw=1, label="teacher")
        ax.set_title(col, fontsize=10)
        ax.set_xlabel("sparsity (weights removed; structured: vs teacher)")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    fig.legend(
        uniq.values(), uniq.keys(), loc="upper center", ncol=max(1, len(uniq)), frameon=False
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _png(fig)


def device_rows(runs: Sequence[RunInfo]) -> List[Tuple[RunInfo, Dict]]:
    return [(r, d) for r in runs for d in r.devices]


def target_label(d: Dict) -> str:
    return device_label(d)


def latency(runs: Sequence[RunInfo]) -> Optional[bytes]:
    """Per target: min / p50 / p90 / p99 latency of each model (log scale)."""
    rows = [(r, d) for r, d in device_rows(runs) if d.get("latency")]
    if not rows:
        return None
    targets = list(dict.fromkeys(target_label(d) for _, d in rows))
    height = max(2.2, 0.35 * len(rows) / max(1, len(targets)) + 1.4)
    fig, axes = _plt().subplots(len(targets), 1, figsize=(9, height * len(targets)), squeeze=False)
    for ax, tgt in zip(axes[:, 0], targets):
        sel = [(r, d["latency"]) for r, d in rows if target_label(d) == tgt]
        for i, (_r, lat) in enumerate(sel):
            ax.plot([lat["min_ms"], lat["p99_ms"]], [i, i], color="#777", lw=1)
            ax.plot([lat["p50_ms"], lat["p90_ms"]], [i, i], color=COLORS[0], lw=6, alpha=0.6)
            ax.plot(lat["p50_ms"], i, "|", color="k", ms=14)
            ax.plot(lat["p99_ms"], i, "x", color=COLORS[1])
        ax.set_yticks(range(len(sel)), [r.name for r, _ in sel])
        _xscale(ax, [v for _, lat in sel for v in (lat["min_ms"], lat["p99_ms"])])
        ax.set_xlabel("ms per invoke (line: min..p99, bar: p50..p90, |: p50, x: p99)")
        ax.set_title(f"latency on {tgt}", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _png(fig)


def pareto_front(points: Sequence[Tuple[float, ...]]) -> List[int]:
    """Indices of points ``(robust acc, cost, cost, ...)`` not dominated by another point
    (higher accuracy and lower costs, e.g. latency, flash bytes, peak RSS, are better)."""
    front = []
    for i, p in enumerate(points):
        dominated = any(
            q[0] >= p[0] and all(c2 <= c for c2, c in zip(q[1:], p[1:])) and tuple(q) != tuple(p)
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


# name, is teacher, robust acc, board metrics, (target label, format) as teacher_wins keys them
BoardPoint = Tuple[str, bool, float, Dict[str, float], Tuple[str, str]]


def board_points(runs: Sequence[RunInfo], robust: str) -> Dict[str, List[BoardPoint]]:
    """Per target (and format when a target ran several): each model's robust accuracy and
    its board metrics (flash bytes, p50, peak RSS), read from results.json."""
    groups: Dict[str, List[BoardPoint]] = {}
    fmts: Dict[str, set] = {}
    for _r, d in device_rows(runs):
        fmts.setdefault(target_label(d), set()).add(d.get("format"))
    for r, d in device_rows(runs):
        acc = r.accuracy.get(robust)
        metrics = {k: board_value(d, k) for k, *_ in BOARD_METRICS}
        if acc is None or any(v is None for v in metrics.values()):
            continue
        tgt = target_label(d)
        key = tgt if len(fmts[tgt]) == 1 else f"{tgt} {d.get('format')}"
        where = (tgt, d.get("format", "?"))
        groups.setdefault(key, []).append((r.name, r.role == "teacher", acc, metrics, where))
    return groups


def model_colors(names: Sequence[str]) -> Dict[str, Tuple[float, ...]]:
    """One colour per model, the same in every panel (tab20: up to 20 distinct)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(dict.fromkeys(names))}


def pareto(runs: Sequence[RunInfo], robust: str) -> Optional[bytes]:
    """:func:`pareto_figure` as PNG bytes (or robust accuracy vs smallest export when nothing
    ran on a board)."""
    fig = pareto_figure(runs, robust)
    return _pareto_exports(runs, robust) if fig is None else _png(fig)


def pareto_figure(runs: Sequence[RunInfo], robust: str):
    """Robust accuracy vs each board metric (flash kB, p50 latency, peak RSS), one row of
    panels per target. Each model has one colour, named once in the legend (no labels on the
    points, so none overlap); the teacher is a square, a student that beats the teacher on a
    panel's metric (``teacher_wins``) a star there, others circles; Pareto-optimal models over
    all three metrics have a thick black outline. None without board results."""
    groups = board_points(runs, robust)
    if not groups:
        return None
    wins = {(w.student, (w.target, w.format), w.metric) for w in teacher_wins(runs)}
    keys = [(k, label) for k, label, _unit, _m in BOARD_METRICS]
    colors = model_colors([p[0] for pts in groups.values() for p in pts])
    plt = _plt()
    fig, axes = plt.subplots(
        len(groups), len(keys), figsize=(4.6 * len(keys), 3.6 * len(groups)), squeeze=False
    )
    for row, (tgt, pts) in zip(axes, groups.items()):
        front = set(pareto_front([(a, *(m[k] for k, _ in keys)) for _, _, a, m, _ in pts]))
        for ax, (key, label) in zip(row, keys):
            unit, factor = display_unit(key, [p[3][key] for p in pts])
            for i, (name, is_teacher, a, m, where) in enumerate(pts):
                beat = (name, where, key) in wins
                marker = "s" if is_teacher else ("*" if beat else "o")
                ax.scatter(
                    factor * m[key], 100 * a, s=170 if beat else 70, marker=marker,
                    color=colors[name], edgecolors="k" if i in front else "none",
                    linewidths=1.6, zorder=3,
                )  # fmt: skip
            _xscale(ax, [factor * p[3][key] for p in pts])
            ax.set_xlabel(f"{label} ({unit}), lower is better")
            ax.set_ylabel("robust accuracy %")
            ax.set_title(f"{tgt}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
    _pareto_legend(fig, colors)
    return fig


def _pareto_legend(fig, colors: Dict[str, Tuple[float, ...]]) -> None:
    """Model colours and marker meanings, once, above the panels."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", ms=8, color=c, label=n) for n, c in colors.items()]
    handles += [
        Line2D([], [], ls="", marker=m, ms=9, color="#777", mec=e, mew=1.6, label=t)
        for m, e, t in (
            ("s", "none", "square: the teacher"),
            ("*", "none", "star: beats the teacher on this metric"),
            ("o", "k", "outline: Pareto-optimal"),
        )
    ]
    ncol = min(4, len(handles))
    rows = -(-len(handles) // ncol)
    fig.legend(handles=handles, loc="upper center", ncol=ncol, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.045 * rows * 3.6 / fig.get_figheight()))


def _pareto_exports(runs: Sequence[RunInfo], robust: str) -> Optional[bytes]:
    """Robust accuracy vs the smallest exported file, when nothing ran on a board."""
    pts = [
        (r.name, r.accuracy[robust], float(min(a["bytes"] for a in r.export.values())))
        for r in runs
        if r.export and robust in r.accuracy
    ]
    if not pts:
        return None
    fig, axes = _plt().subplots(1, 1, figsize=(5.5, 4.2), squeeze=False)
    ax = axes[0, 0]
    front = set(pareto_front([(a, s) for _, a, s in pts]))
    for i, (name, a, size) in enumerate(pts):
        on = i in front
        ax.scatter(
            size, 100 * a, s=60, color=COLORS[0] if on else "#bbb",
            edgecolors="k" if on else "none", zorder=3,
        )  # fmt: skip
        ax.annotate(name, (size, 100 * a), fontsize=7, xytext=(4, 4), textcoords="offset points")
    _xscale(ax, [s for *_, s in pts])
    ax.set_xlabel("smallest export (bytes)")
    ax.set_ylabel(f"robust accuracy % ({robust})")
    ax.set_title("no board results: outlined = Pareto-optimal", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)
