"""FGSM (Goodfellow et al., 2015): one signed-gradient step of size eps."""

from __future__ import annotations

import torch

from robustedge.attacks.base import ATTACKS, Attack


@ATTACKS.register("fgsm")
class FGSM(Attack):
    name = "fgsm"
    short_name = "FGSM"  # one step, no restarts: the base's default_steps 0 / no restarts

    def _perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, grad = self.loss_grad(x, y)
        return x + self.eps * grad.sign()
