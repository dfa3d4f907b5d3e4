"""Robust compression (paper 1): proximal pruning + distillation + adversarial training.

Pure prox operators (:mod:`prox`), prunable targets and masks (:mod:`targets`), the KD task
loss (:mod:`distill`), the lam schedule (:mod:`schedule`), channel groups and physical removal
(:mod:`structured`), the methods registered in ``PRUNERS`` with their own options
(:func:`register_method`; the built-in ones: ``method_*.py``) and the run-folder pipeline
(:func:`compress_run`).
"""

from robustedge.compress import method_admm as _admm  # noqa: F401  (registers)
from robustedge.compress import method_gmp as _gmp  # noqa: F401
from robustedge.compress import method_harp as _harp  # noqa: F401
from robustedge.compress import method_hydra as _hydra  # noqa: F401
from robustedge.compress import method_magnitude as _magnitude  # noqa: F401
from robustedge.compress import method_prox as _prox  # noqa: F401
from robustedge.compress.common import PruneContext, PruneOutcome
from robustedge.compress.config import (
    PRUNERS,
    CompressConfig,
    MethodOptions,
    Pruner,
    Scope,
    register_method,
)
from robustedge.compress.distill import KDTarget, kd_loss, make_kd_task_loss
from robustedge.compress.method_admm import AdmmOptions
from robustedge.compress.method_gmp import GmpOptions
from robustedge.compress.method_harp import HarpOptions
from robustedge.compress.method_hydra import HydraOptions
from robustedge.compress.method_prox import ProxOptions
from robustedge.compress.pipeline import compress_run, read_masks

__all__ = [
    "PRUNERS",
    "Pruner",
    "MethodOptions",
    "register_method",
    "PruneContext",
    "PruneOutcome",
    "CompressConfig",
    "Scope",
    "KDTarget",
    "AdmmOptions",
    "GmpOptions",
    "HarpOptions",
    "HydraOptions",
    "ProxOptions",
    "kd_loss",
    "make_kd_task_loss",
    "compress_run",
    "read_masks",
]
