"""TRADES' inner maximisation (Zhang et al., 2019) as an attack.

``x_adv`` maximises ``KL(f(x) || f(x_adv))`` within the Linf eps-ball: a small Gaussian start
(sigma 0.001), then ``steps`` signed-gradient steps of size ``2.5 * eps / steps``, each
projected onto the eps-ball and the input range. Labels are not used (the clean prediction
is the target), so it attacks a model's stability rather than its accuracy.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustedge.attacks.base import ATTACKS, Attack, AttackSpec


@ATTACKS.register("trades")
class TradesKL(Attack):
    name = "trades"
    short_name = "TRADES"
    default_steps = 10  # one run, no restarts

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = default_steps,
        bounds: Tuple[float, float] = (0.0, 1.0),
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(model, eps, bounds, generator)
        if steps < 1:
            raise ValueError(f"TRADES needs steps >= 1, got {steps}")
        self.steps = int(steps)

    @classmethod
    def from_spec(cls, model: nn.Module, spec: AttackSpec, **kwargs: Any) -> TradesKL:
        steps, _ = cls.spec_settings(spec)
        return cls(model, spec.eps, steps=steps, **{**spec.params, **kwargs})

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            noise = torch.randn_like(x)
        else:
            noise = torch.randn(x.shape, generator=self.generator).to(x.device)
        return torch.clamp(x + 0.001 * noise, self.lo, self.hi)

    def _perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        alpha = 2.5 * self.eps / self.steps
        with torch.no_grad():
            p_clean = F.softmax(self.model(x), dim=1)
        x_adv = self._start(x)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(self.model(x_adv), 1), p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps)
            x_adv = torch.clamp(x_adv, self.lo, self.hi)
        return x_adv.detach()
