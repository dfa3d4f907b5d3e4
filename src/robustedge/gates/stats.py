"""Is a drop in accuracy noise? One-sided tests for "the new model is worse than the baseline".

- **Paired** (both runs kept per-image outcomes on the same images): the exact McNemar test.
  Only the discordant images carry information: ``b`` images the baseline got right and the
  new model wrong, ``c`` the other way round. Under "no change" each discordant image is a fair
  coin, so ``b ~ Binomial(b + c, 1/2)`` and the p-value of the drop is ``P(X >= b)``
  (McNemar, 1947; the exact binomial form).
- **Unpaired** (only the accuracies and image counts): the one-sided two-proportion z-test with
  the pooled proportion, ``z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2))``,
  ``p-value = P(Z >= z) = erfc(z / sqrt 2) / 2``. It ignores the pairing, so it needs a larger
  drop to call it significant: for the same two models McNemar is the sharper test.

Standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


def binom_sf(k: int, n: int, p: float = 0.5) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)`` (exact sum; 1.0 for k <= 0)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def mcnemar_exact(b: int, c: int) -> float:
    """One-sided exact McNemar p-value that the new model is worse: ``b`` images only the
    baseline classified correctly, ``c`` images only the new model did."""
    return binom_sf(b, b + c, 0.5)


def two_proportion(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value that proportion 1 (baseline, ``k1`` of ``n1``) exceeds proportion 2
    (new, ``k2`` of ``n2``): pooled two-proportion z-test."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("two_proportion needs image counts > 0")
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var == 0:
        return 1.0 if p1 <= p2 else 0.0
    z = (p1 - p2) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class DropTest:
    """The verdict on one accuracy drop: the test used, its p-value and what it counted."""

    test: str  # "McNemar exact" | "two-proportion z" | "none"
    p_value: Optional[float]
    detail: str


def paired_drop(base: Sequence[bool], new: Sequence[bool]) -> DropTest:
    """Exact McNemar on two equally long per-image outcome vectors."""
    if len(base) != len(new):
        raise ValueError("paired outcomes must cover the same images")
    b = sum(1 for x, y in zip(base, new) if x and not y)
    c = sum(1 for x, y in zip(base, new) if y and not x)
    return DropTest("McNemar exact", mcnemar_exact(b, c), f"{b} lost vs {c} gained images")


def unpaired_drop(acc1: float, n1: int, acc2: float, n2: int) -> DropTest:
    """Two-proportion z-test from accuracies and image counts (counts rounded from them)."""
    k1, k2 = round(acc1 * n1), round(acc2 * n2)
    p = two_proportion(k1, n1, k2, n2)
    return DropTest("two-proportion z", p, f"{k1}/{n1} vs {k2}/{n2} images")
