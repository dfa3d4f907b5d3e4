"""Training loop, training adversaries and evaluation.

Every adversary module is imported here so that ``ADVERSARIES`` is complete (as
``robustedge.attacks`` does for ``ATTACKS``).
"""

from robustedge.training import manifold_adversaries as _manifold  # noqa: F401  (registers)
from robustedge.training.adversaries import ADVERSARIES, TrainingAdversary, build_adversary
from robustedge.training.evaluate import accuracy, evaluate, robust_accuracy
from robustedge.training.loop import epoch_batches, fit, make_optimizer

__all__ = [
    "ADVERSARIES",
    "TrainingAdversary",
    "build_adversary",
    "accuracy",
    "evaluate",
    "robust_accuracy",
    "epoch_batches",
    "fit",
    "make_optimizer",
]
