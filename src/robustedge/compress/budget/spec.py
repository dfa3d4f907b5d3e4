"""The budget: one limit on the student, ``quantity <= limit``.

``macs=2M`` (multiply-accumulates per inference), ``flash_kb=64`` (what the board stores, KiB)
or ``latency_ms=2`` (p50 of one inference, measured on a named target).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


class Quantity(str, enum.Enum):
    MACS = "macs"
    FLASH_KB = "flash_kb"
    LATENCY_MS = "latency_ms"


class Shape(str, enum.Enum):
    """How the search spreads the budget over the layers: ``layers``, non-uniform widths by
    robust sensitivity per unit saved (:mod:`.shape`); ``uniform``, one fraction of channels
    removed from every layer (:mod:`.search`)."""

    LAYERS = "layers"
    UNIFORM = "uniform"


UNITS = {Quantity.MACS: "MACs", Quantity.FLASH_KB: "KiB", Quantity.LATENCY_MS: "ms"}
FORMS = "macs=N[k|M|G] | flash_kb=N | latency_ms=N, then optionally ,shape=layers|uniform"
# One fraction for every layer stays the default: the per-layer search lost to it in the one
# measurement so far (flash_kb=3.1 on digits, docs/robust-methods.md); opt in with shape=layers.
DEFAULT_SHAPE = {
    Quantity.MACS: Shape.UNIFORM,
    Quantity.FLASH_KB: Shape.UNIFORM,
    Quantity.LATENCY_MS: Shape.UNIFORM,
}


@dataclass(frozen=True)
class Budget:
    """One limit on the student: ``quantity <= limit`` (in :data:`UNITS`); latency budgets
    name the ``target`` they are measured on."""

    quantity: Quantity
    limit: float
    target: Optional[str] = None
    shape: Optional[Shape] = None  # None: the quantity's DEFAULT_SHAPE

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "quantity", Quantity(self.quantity))
        except ValueError:
            raise ValueError(
                f"unknown budget '{self.quantity}' (known: {', '.join(q.value for q in Quantity)})"
            ) from None
        try:
            shape = Shape(self.shape or DEFAULT_SHAPE[self.quantity])
        except ValueError:
            raise ValueError(
                f"unknown budget shape '{self.shape}' (known: {', '.join(s.value for s in Shape)})"
            ) from None
        object.__setattr__(self, "shape", shape)
        if not (math.isfinite(self.limit) and self.limit > 0):
            raise ValueError(f"budget {self.quantity.value} must be a positive number")
        if self.quantity is Quantity.LATENCY_MS and not self.target:
            raise ValueError(
                "a latency budget is measured on a board: give --budget-target "
                "(local or ssh://user@host)"
            )
        if self.quantity is not Quantity.LATENCY_MS and self.target:
            raise ValueError(f"a {self.quantity.value} budget needs no target (it is computed)")

    @classmethod
    def parse(cls, text: str, target: Optional[str] = None) -> Budget:
        """``"macs=2M"``, ``"flash_kb=64"`` or ``"latency_ms=2"``, optionally followed by
        ``",shape=uniform"`` (ValueError, one line)."""
        head, _, rest = str(text).strip().partition(",")
        shape = None
        if rest:
            k, sep, v = rest.strip().partition("=")
            if k.strip() != "shape" or not sep or "," in v:
                raise ValueError(f"bad budget '{text}' (want {FORMS})")
            shape = v.strip()
        key, sep, value = head.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"bad budget '{text}' (want {FORMS})")
        scale = 1.0
        if key == Quantity.MACS.value and value[-1] in SUFFIXES:
            value, scale = value[:-1], SUFFIXES[value[-1]]
        try:
            limit = float(value) * scale
        except ValueError:
            raise ValueError(
                f"bad budget '{text}': '{value}' is not a number (want {FORMS})"
            ) from None
        return cls(key, limit, target, shape)  # type: ignore[arg-type]

    @property
    def unit(self) -> str:
        return UNITS[self.quantity]

    def aimed(self, margin: float) -> Budget:
        """The same budget with ``margin`` of its limit held back (what a search aims at)."""
        return Budget(self.quantity, self.limit * (1.0 - margin), self.target, self.shape)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "quantity": self.quantity.value,
            "limit": self.limit,
            "unit": self.unit,
            "target": self.target,
            "shape": self.shape.value,  # type: ignore[union-attr]
        }
