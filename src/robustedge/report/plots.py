"""Matplotlib figures of the report, returned as PNG bytes (Agg backend, no display)."""

from __future__ import annotations

import io
import logging
from typing import Dict, List, Optional, Sequence, Tuple

from robustedge.report.collect import RunInfo

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
    return f"{d.get('target', '?')}" + (" (EMULATED)" if d.get("emulated") else "")


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


def pareto_front(points: Sequence[Tuple[float, float, float]]) -> List[int]:
    """Indices of points (robust acc, latency, size) not dominated by another point
    (higher accuracy, lower latency and size are better)."""
    front = []
    for i, (a, t, s) in enumerate(points):
        dominated = any(
            a2 >= a and t2 <= t and s2 <= s and (a2, t2, s2) != (a, t, s)
            for j, (a2, t2, s2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def pareto(runs: Sequence[RunInfo], robust: str) -> Optional[bytes]:
    """Robust accuracy vs latency p50 per target (marker area ~ model bytes), or vs model
    size when nothing was measured on a board. Pareto-optimal points are outlined."""
    groups: Dict[str, List[Tuple[str, float, float, float]]] = {}
    for r, d in device_rows(runs):
        acc = r.accuracy.get(robust)
        if d.get("latency") and acc is not None:
            groups.setdefault(target_label(d), []).append(
                (r.name, acc, d["latency"]["p50_ms"], float(d["model_bytes"]))
            )
    xlabel = "latency p50 (ms)"
    if not groups:
        for r in runs:
            size = min((a["bytes"] for a in r.export.values()), default=None)
            if size and robust in r.accuracy:
                groups.setdefault("smallest export", []).append(
                    (r.name, r.accuracy[robust], float(size), float(size))
                )
        xlabel = "model bytes"
    if not groups:
        return None
    fig, axes = _plt().subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    for ax, (tgt, pts) in zip(axes[0], groups.items()):
        front = set(pareto_front([(a, t, s) for _, a, t, s in pts]))
        smax = max(s for *_, s in pts)
        for i, (name, a, t, s) in enumerate(pts):
            on = i in front
            ax.scatter(
                t,
                100 * a,
                s=40 + 400 * s / smax,
                color=COLORS[0] if on else "#bbb",
                edgecolors="k" if on else "none",
                zorder=3,
            )
            ax.annotate(name, (t, 100 * a), fontsize=7, xytext=(4, 4), textcoords="offset points")
        _xscale(ax, [t for _, _, t, _ in pts])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"robust accuracy % ({robust})")
        ax.set_title(f"{tgt}: marker area ~ model size; outlined = Pareto-optimal", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)
