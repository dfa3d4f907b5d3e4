"""The floor of every config: enums, strict construction from dicts, shared validators.

Configs themselves live with what they configure (``training.config.TrainConfig``,
``compress.config.CompressConfig``); they are frozen dataclasses that validate themselves.
"""

from __future__ import annotations

import enum
from dataclasses import fields
from typing import Any, Dict


class Optim(str, enum.Enum):
    ADAM = "adam"
    SGD = "sgd"


def enum_value(cls, value, what):
    """``cls(value)``, or a ValueError listing the known values."""
    try:
        return cls(value)
    except ValueError:
        known = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown {what} '{value}' (known: {known})") from None


def strict_from_dict(cls, d: Dict[str, Any]):
    """Build dataclass ``cls`` from ``d``; unknown keys are a ValueError naming them."""
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(unknown)}")
    return cls(**d)


def check_positive(obj: Any, *names: str) -> None:
    """ValueError naming the first of ``names`` whose value on ``obj`` is not > 0."""
    for n in names:
        v = getattr(obj, n)
        if not (v > 0):
            raise ValueError(f"{n} must be > 0, got {v}")
