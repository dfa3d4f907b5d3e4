"""Knowledge distillation as a ``task_loss(logits, y, x_used)`` for the training adversaries.

``(1 - a) * CE(S(x), y) + a * t^2 * KL(softmax(T(x)/t) || softmax(S(x)/t))`` with the teacher
evaluated on the *same* examples the student sees (``x_used``: the adversarial ones under PGD
or FGSM, the clean ones for TRADES' natural term). Hinton et al. 2015's t^2 keeps gradient
scales comparable across temperatures. With ``a = 0`` it is plain cross-entropy.
"""

from __future__ import annotations

import enum
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustedge.training.adversaries import TaskLoss


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    y: torch.Tensor,
    alpha: float,
    temp: float,
) -> torch.Tensor:
    """The distillation objective on precomputed logits (batch-mean)."""
    ce = F.cross_entropy(student_logits, y)
    if alpha == 0:
        return ce
    kl = F.kl_div(
        F.log_softmax(student_logits / temp, dim=1),
        F.softmax(teacher_logits / temp, dim=1),
        reduction="batchmean",
    )
    return (1.0 - alpha) * ce + alpha * temp * temp * kl


class KDTarget(str, enum.Enum):
    """What the teacher answers on (see :class:`KDTaskLoss`)."""

    ADV = "adv"
    CLEAN = "clean"


KD_TARGETS = tuple(t.value for t in KDTarget)


class KDTaskLoss:
    """A task loss that queries the frozen ``teacher`` (eval mode, no grad).

    ``target="adv"``: the teacher sees the same examples as the student (``x_used``).
    ``target="clean"``: the teacher sees the clean batch the adversary started from (robust
    soft labels as in ARD, Goldblum et al. 2020, and RSLAD, Zi et al. 2021): the student is
    pulled towards the teacher's answer on the clean image instead of the teacher's own
    (possibly fooled) answer on the student's adversarial example. The clean batch comes from
    :class:`RememberClean` wrapped around the training adversary; without it (or when the
    sizes differ) the teacher sees ``x_used``.
    """

    def __init__(
        self, teacher: Optional[nn.Module], alpha: float, temp: float, target: str = "adv"
    ) -> None:
        if not (0.0 <= alpha <= 1.0):
            raise ValueError(f"kd alpha must lie in [0, 1], got {alpha}")
        if not (temp > 0):
            raise ValueError(f"kd temperature must be > 0, got {temp}")
        if target not in KD_TARGETS:
            raise ValueError(f"kd target must be one of {', '.join(KD_TARGETS)}, got '{target}'")
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.teacher, self.alpha, self.temp, self.target = teacher, alpha, temp, target
        self.clean: Optional[torch.Tensor] = None  # set per batch by RememberClean

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x_used: torch.Tensor) -> torch.Tensor:
        if self.teacher is None or self.alpha == 0:
            return F.cross_entropy(logits, y)
        x_t = x_used
        if self.target == "clean" and self.clean is not None and len(self.clean) == len(x_used):
            x_t = self.clean
        with torch.no_grad():
            t_logits = self.teacher(x_t.detach())
        return kd_loss(logits, t_logits, y, self.alpha, self.temp)


class RememberClean:
    """Wraps a training adversary: hands each clean batch to ``sink`` before the adversary
    perturbs it (for ``KDTaskLoss(target="clean")``); everything else is the adversary's."""

    def __init__(self, adversary, sink: KDTaskLoss) -> None:
        self.inner, self.sink = adversary, sink

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, task_loss: TaskLoss):
        self.sink.clean = x
        return self.inner.loss(model, x, y, task_loss)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def make_kd_task_loss(
    teacher: Optional[nn.Module], alpha: float, temp: float, target: str = "adv"
) -> KDTaskLoss:
    """The KD task loss (see :class:`KDTaskLoss`)."""
    return KDTaskLoss(teacher, alpha, temp, target)
