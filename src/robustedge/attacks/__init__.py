"""Attacks, one per file on the :class:`Attack` base; ``ATTACKS`` maps names to classes."""

from robustedge.attacks import apgd as _apgd  # noqa: F401  (registers)
from robustedge.attacks import autoattack as _autoattack  # noqa: F401
from robustedge.attacks import fgsm as _fgsm  # noqa: F401  (registers)
from robustedge.attacks import on_manifold as _on_manifold  # noqa: F401
from robustedge.attacks import pgd as _pgd  # noqa: F401
from robustedge.attacks import square as _square  # noqa: F401
from robustedge.attacks import trades as _trades  # noqa: F401
from robustedge.attacks.base import (
    ATTACKS,
    DEFAULT_EPS,
    Attack,
    AttackSpec,
    budget_name,
    build_attack,
    eps_or_default,
    predict,
)
from robustedge.attacks.fgsm import FGSM
from robustedge.attacks.pgd import PGD
from robustedge.attacks.square import Square
from robustedge.attacks.trades import TradesKL

__all__ = [
    "ATTACKS",
    "DEFAULT_EPS",
    "Attack",
    "AttackSpec",
    "budget_name",
    "build_attack",
    "eps_or_default",
    "predict",
    "FGSM",
    "PGD",
    "Square",
    "TradesKL",
]
