"""Knowledge distillation as a ``task_loss(logits, y, x_used)`` for the training adversaries.

``(1 - a) * CE(S(x), y) + a * t^2 * KL(softmax(T(x)/t) || softmax(S(x)/t))`` with the teacher
evaluated on the *same* examples the student sees (``x_used``: the adversarial ones under PGD
or FGSM, the clean ones for TRADES' natural term). Hinton et al. 2015's t^2 keeps gradient
scales comparable across temperatures. With ``a = 0`` it is plain cross-entropy.
"""

from __future__ import annotations

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


def make_kd_task_loss(teacher: Optional[nn.Module], alpha: float, temp: float) -> TaskLoss:
    """A task loss that queries the frozen ``teacher`` (eval mode, no grad) on ``x_used``."""
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"kd alpha must lie in [0, 1], got {alpha}")
    if not (temp > 0):
        raise ValueError(f"kd temperature must be > 0, got {temp}")
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def task_loss(logits: torch.Tensor, y: torch.Tensor, x_used: torch.Tensor) -> torch.Tensor:
        if teacher is None or alpha == 0:
            return F.cross_entropy(logits, y)
        with torch.no_grad():
            t_logits = teacher(x_used.detach())
        return kd_loss(logits, t_logits, y, alpha, temp)

    return task_loss
