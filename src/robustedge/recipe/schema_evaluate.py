"""The recipe's ``evaluate:`` section: extra evaluation of every model of the recipe.

``suite: worst-case`` (a :data:`robustedge.attacks.suite.SUITES` name) adds the worst case per
image over that suite's attacks at every ``eps``; its result lands in each model's eval.json
under ``"suites"`` and is what the report's headline shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from robustedge.attacks import DEFAULT_EPS
from robustedge.recipe.loader import FieldError
from robustedge.training.evaluate import DEFAULT_ETA


@dataclass(frozen=True)
class EvalSpec:
    """Extra evaluation of every model (on top of the FGSM/PGD in its metrics.json)."""

    attacks: Tuple[str, ...] = ("pgd",)
    eps: Tuple[float, ...] = (DEFAULT_EPS,)
    pgd_steps: Optional[int] = None
    restarts: Optional[int] = None
    square_queries: Optional[int] = None
    manifold: Optional[str] = None
    eta: float = DEFAULT_ETA
    corruptions: bool = False
    suite: Optional[str] = None

    def __post_init__(self) -> None:
        from robustedge.attacks import ATTACKS
        from robustedge.attacks.suite import SUITES

        for i, name in enumerate(self.attacks):
            if name not in ATTACKS.names():
                raise FieldError(f"attacks[{i}]", f"unknown attack '{name}' ({ATTACKS.names()})")
        if "onmanifold" in self.attacks and not self.manifold:
            raise FieldError("attacks", "attack 'onmanifold' needs 'manifold: VAE_RUN|synthetic'")
        for i, e in enumerate(self.eps):
            if not 0 < e <= 1:
                raise FieldError(f"eps[{i}]", f"eps must lie in (0, 1], got {e}")
        for key in ("pgd_steps", "restarts", "square_queries"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise FieldError(key, f"{key} must be >= 1, got {v}")
        if self.suite is not None and self.suite not in SUITES.names():
            raise FieldError(
                "suite",
                f"unknown attack suite '{self.suite}' (known: {', '.join(SUITES.names())})",
            )

    def runs_anything(self) -> bool:
        """Whether the section asks for any evaluation (else no eval stage is planned)."""
        return bool(self.attacks or self.corruptions or self.suite)
