"""Adversarial weight perturbation (AWP; Wu, Xia & Wang, NeurIPS 2020) around a training adversary.

Per batch: the adversary crafts its examples at the weights ``w``; one normalised ascent step
on the same objective gives a weight perturbation ``v`` with ``||v_l|| = gamma * ||w_l||`` per
layer (AWP's layer-wise relative size, on the weights of dimension > 1 as in the paper's code);
the loss returned is the objective at ``w + v`` on the same examples. Its gradient flows to
``w`` (``w + v`` is built from ``w`` with ``v`` detached), so the optimizer applies at ``w`` the
gradient taken at the worst nearby weights: a flatter loss landscape in weight space, which the
paper shows closes part of the robust generalisation gap.

Sparse models: ``v`` lives on the non-zero entries of each weight only, so a pruned (zero)
weight is never perturbed and the perturbation budget is spent on the weights the model keeps.
The perturbation is deterministic (no random stream); under torchrun the ascent gradient is
averaged over the ranks first, so every rank perturbs by the same ``v`` of the global batch.
One more forward + backward per step (and one more teacher forward when distilling).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
import torch.nn as nn
from torch.func import functional_call

from robustedge import distributed
from robustedge.training.adversaries import TaskLoss


class _Shifted:
    """``model`` called with some parameters replaced (the replacements stay differentiable)."""

    def __init__(self, model: nn.Module, params: Dict[str, torch.Tensor]) -> None:
        self.model, self.params = model, params

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.params, (x,))


class AWP:
    """Wraps a :class:`~robustedge.training.adversaries.TrainingAdversary`; ``gamma`` is the
    perturbation's size relative to each layer's weight norm (the paper uses 5e-3 to 1e-2)."""

    def __init__(self, adversary: Any, gamma: float) -> None:
        if not (0.0 < gamma < 1.0):
            raise ValueError(f"AWP gamma must lie in (0, 1), got {gamma}")
        self.inner, self.gamma = adversary, float(gamma)

    def perturbation(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_used: torch.Tensor, task_loss
    ) -> Dict[str, torch.Tensor]:
        """``w + v`` per perturbed parameter name (``v`` detached)."""
        named: List[Tuple[str, nn.Parameter]] = [
            (n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1
        ]
        ascent = self.inner.objective(model, x, y, x_used, task_loss)
        grads = torch.autograd.grad(ascent, [p for _, p in named], allow_unused=True)
        grads = distributed.average_tensors(
            [g if g is not None else torch.zeros_like(p) for (_, p), g in zip(named, grads)]
        )
        shifted = {}
        for (name, p), g in zip(named, grads):
            w = p.detach()
            g = g * (w != 0)
            g_norm = g.norm()
            if g_norm > 0:
                shifted[name] = p + (self.gamma * w.norm() / g_norm) * g
        return shifted

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, task_loss: TaskLoss):
        x_used = self.inner.examples(model, x, y)
        shifted = self.perturbation(model, x, y, x_used, task_loss)
        return self.inner.objective(_Shifted(model, shifted), x, y, x_used, task_loss)

    def describe(self) -> dict:
        return {**self.inner.describe(), "awp_gamma": self.gamma}

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
