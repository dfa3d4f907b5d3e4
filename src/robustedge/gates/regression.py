"""Regression gates: the new results against a baseline (the last accepted run).

Subjects are matched on model, target and format. Per matched pair:

- ``clean`` / ``robust``: fail when the accuracy dropped by more than ``max_drop`` **and** the
  drop is significant at ``alpha`` (:mod:`robustedge.gates.stats`): the exact McNemar test on
  per-image outcomes when both runs kept them for the same images (same clean-set sha256 and
  count), else the two-proportion z-test on the accuracies and image counts. Without image
  counts no test is possible and the drop alone decides.
- ``flash_bytes``: fail when it grew by more than ``max_flash_growth`` (exact, no noise).
- ``p50_vs_teacher``: fail when it grew by more than ``max_latency_growth``.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from robustedge.gates.result import CheckResult, Outcome
from robustedge.gates.spec import RegressionConfig
from robustedge.gates.stats import DropTest, paired_drop, unpaired_drop
from robustedge.gates.subjects import Subject

logger = logging.getLogger(__name__)
ACCURACIES = ("clean", "robust")
GROWTHS = (("flash_bytes", "max_flash_growth"), ("p50_vs_teacher", "max_latency_growth"))


def compare(
    new: Sequence[Subject], base: Sequence[Subject], cfg: RegressionConfig, result: CheckResult
) -> None:
    """Append one regression outcome per matched subject and metric to ``result`` (a note for
    each subject the baseline does not have)."""
    index = {b.key: b for b in base}
    for s in new:
        b = index.get(s.key)
        if b is None:
            result.notes.append(f"{s.where}: not in the baseline (no regression gate)")
            continue
        for metric in ACCURACIES:
            if metric in s.values and metric in b.values:
                result.outcomes.append(accuracy_outcome(s, b, metric, cfg))
        for metric, key in GROWTHS:
            if metric in s.values and metric in b.values:
                result.outcomes.append(growth_outcome(s, b, metric, getattr(cfg, key)))


def outcome_vectors(s: Subject, metric: str) -> Optional[Any]:
    """The per-image outcomes behind ``metric`` (``robust``: the worst case per image; the
    count recorded with them), or None when the results file kept none."""
    from robustedge.device.board.measure import unpack_outcomes

    packed, n = s.outcomes.get(metric), (s.outcomes.get("n") or {}).get(metric)
    if not isinstance(packed, str) or not isinstance(n, int):
        return None
    try:
        return unpack_outcomes(packed, n)
    except ValueError:
        logger.warning("%s: unreadable per-image outcomes for %s", s.source, metric)
        return None


def drop_test(s: Subject, b: Subject, metric: str) -> DropTest:
    """McNemar on paired outcomes when both runs saw the same images, else two-proportion."""
    same_images = s.outcomes.get("images") and s.outcomes.get("images") == b.outcomes.get("images")
    new_v, base_v = outcome_vectors(s, metric), outcome_vectors(b, metric)
    if same_images and new_v is not None and base_v is not None and len(new_v) == len(base_v):
        return paired_drop(list(base_v), list(new_v))
    m_new, m_base = s.values[metric], b.values[metric]
    if m_new.n and m_base.n:
        return unpaired_drop(float(m_base.value), m_base.n, float(m_new.value), m_new.n)
    return DropTest("none", None, "no image counts: the drop alone decides")


def accuracy_outcome(s: Subject, b: Subject, metric: str, cfg: RegressionConfig) -> Outcome:
    """Fail when the drop exceeds ``max_drop`` and the test says it is not noise."""
    new, old = float(s.values[metric].value), float(b.values[metric].value)
    drop = old - new
    test = drop_test(s, b, metric) if drop > cfg.max_drop else None
    significant = test is not None and (test.p_value is None or test.p_value < cfg.alpha)
    detail = f"baseline {old:.4g}, change {-100 * drop:+.2f} pt"
    if test is not None:
        p = "n/a" if test.p_value is None else f"{test.p_value:.3g}"
        detail += f", {test.test} p={p} ({test.detail})"
        if not significant:
            detail += f": not significant at alpha={cfg.alpha:g}"
    return Outcome(
        s.model,
        s.target,
        s.format,
        f"{metric} vs baseline",
        metric,
        new,
        f"drop <= {cfg.max_drop:g} or p >= {cfg.alpha:g}",
        not significant,
        s.values[metric].label,
        detail,
        "regression",
    )


def growth_outcome(s: Subject, b: Subject, metric: str, limit: float) -> Outcome:
    """Fail when ``metric`` grew by more than ``limit`` (a fraction) over the baseline."""
    new, old = float(s.values[metric].value), float(b.values[metric].value)
    growth = new / old - 1.0 if old else (0.0 if new == old else float("inf"))
    return Outcome(
        s.model,
        s.target,
        s.format,
        f"{metric} vs baseline",
        metric,
        new,
        f"growth <= {100 * limit:g} %",
        growth <= limit + 1e-9,  # 2200 / 2000 - 1 is 0.1 + 1e-16
        s.values[metric].label,
        f"baseline {old:.6g}, change {100 * growth:+.1f} %",
        "regression",
    )
