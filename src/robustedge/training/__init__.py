"""Training loop, adversaries, evaluation and run folders."""

from robustedge.training.adversaries import ADVERSARIES, TrainingAdversary, build_adversary
from robustedge.training.evaluate import accuracy, default_spec, evaluate, robust_accuracy
from robustedge.training.loop import epoch_batches, fit

__all__ = [
    "ADVERSARIES",
    "TrainingAdversary",
    "build_adversary",
    "accuracy",
    "default_spec",
    "evaluate",
    "robust_accuracy",
    "epoch_batches",
    "fit",
]
