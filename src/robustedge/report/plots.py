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
    """Log x axis only when the values span more than 10x; plain tick labels either way."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    vals = [v for v in values if v > 0]
    if vals and max(vals) / min(vals) > 10:
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)


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


def pareto(runs: Sequence[RunInfo], robust: str) -> Optional[bytes]:
    """Robust accuracy vs each board metric (flash bytes, p50 latency, peak RSS), one row of
    panels per target. The teacher is a black square; a student that beats the teacher on a
    panel's metric (``teacher_wins``) is a green star there; Pareto-optimal models over all
    three metrics are outlined. Without board results: robust accuracy vs smallest export."""
    groups = board_points(runs, robust)
    if not groups:
        return _pareto_exports(runs, robust)
    wins = {(w.student, (w.target, w.format), w.metric) for w in teacher_wins(runs)}
    keys = [(k, label, unit) for k, label, unit, _m in BOARD_METRICS]
    fig, axes = _plt().subplots(
        len(groups), len(keys), figsize=(5.0 * len(keys), 4.0 * len(groups)), squeeze=False
    )
    for row, (tgt, pts) in zip(axes, groups.items()):
        front = set(pareto_front([(a, *(m[k] for k, *_ in keys)) for _, _, a, m, _ in pts]))
        for ax, (key, label, unit) in zip(row, keys):
            for i, (name, is_teacher, a, m, where) in enumerate(pts):
                beat = (name, where, key) in wins
                marker, color = ("*", "#2ca02c") if beat else ("o", "#bbb")
                if is_teacher:
                    marker, color = "s", "k"
                ax.scatter(
                    m[key],
                    100 * a,
                    s=160 if beat else 60,
                    marker=marker,
                    color=color,
                    edgecolors=COLORS[1] if i in front else "none",
                    linewidths=1.5,
                    zorder=3,
                )
                tag = " beats teacher" if beat else ""
                if is_teacher and "teacher" not in name:
                    tag = " (teacher)"
                ax.annotate(
                    name + tag, (m[key], 100 * a), fontsize=7, xytext=(4, 4),
                    textcoords="offset points",
                )  # fmt: skip
            _xscale(ax, [p[3][key] for p in pts])
            ax.set_xlabel(f"{label} ({unit}), lower is better")
            ax.set_ylabel(f"robust accuracy % ({robust})")
            ax.set_title(f"{tgt}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
    fig.suptitle(
        "black square: teacher; green star: student beats the teacher on that metric; "
        "red outline: Pareto-optimal (robust acc, flash, p50, peak RSS)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _png(fig)


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
