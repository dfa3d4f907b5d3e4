"""PGD (Madry et al., 2018): projected gradient ascent with random start and restarts.

Linf steps move by ``alpha * sign(grad)``; L2 steps by ``alpha * grad / ||grad||_2``.
With several restarts, each sample keeps the first restart that fools the model (else the
one with the highest loss).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn as nn

from robustedge.attacks.base import ATTACKS, Attack, AttackSpec


@ATTACKS.register("pgd")
class PGD(Attack):
    name = "pgd"
    short_name = "PGD"
    default_steps = 20  # evaluation default: PGD-20 x 5 random restarts
    default_restarts = 5
    has_restarts = True

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = default_steps,
        alpha: Optional[float] = None,
        restarts: int = 1,
        norm: str = "linf",
        random_start: bool = True,
        bounds: Tuple[float, float] = (0.0, 1.0),
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(model, eps, bounds, generator)
        if steps < 1 or restarts < 1:
            raise ValueError(f"PGD needs steps >= 1 and restarts >= 1, got {steps}, {restarts}")
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got '{norm}'")
        self.steps, self.restarts, self.norm = steps, restarts, norm
        self.alpha = alpha if alpha is not None else 2.5 * self.eps / steps
        self.random_start = random_start

    @classmethod
    def from_spec(cls, model: nn.Module, spec: AttackSpec, **kwargs: Any) -> PGD:
        steps, restarts = cls.spec_settings(spec)
        params = {**spec.params, **kwargs}
        return cls(model, spec.eps, steps=steps, restarts=restarts, norm=spec.norm, **params)

    def _perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        best = x.clone()
        best_loss = torch.full((len(x),), -float("inf"), device=x.device)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            x_adv = self._one_run(x, y)
            with torch.no_grad():
                logits = self.model(x_adv)
                loss = nn.functional.cross_entropy(logits, y, reduction="none")
                fooled = logits.argmax(1) != y
            take = ~done & (fooled | (loss > best_loss))
            best[take] = x_adv[take]
            best_loss = torch.where(take, loss, best_loss)
            done |= fooled
            if bool(done.all()):
                break
        return best

    def _one_run(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x + self._random_delta(x) if self.random_start else x.clone()
        x_adv = self.project(x_adv, x)
        for _ in range(self.steps):
            _, grad = self.loss_grad(x_adv, y)
            x_adv = self.project(x_adv + self.alpha * self._direction(grad), x)
        return x_adv

    def _random_delta(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.rand(x.shape, generator=self.generator, device="cpu").to(x.device)
        if self.norm == "linf":
            return (2 * u - 1) * self.eps
        g = torch.randn(x.shape, generator=self.generator, device="cpu").to(x.device)
        g = g / _l2(g).clamp_min(1e-12)
        r = u.flatten(1)[:, :1].view(-1, *([1] * (x.dim() - 1)))
        return g * r * self.eps

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / _l2(grad).clamp_min(1e-12)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return super().project(x_adv, x)
        delta = x_adv - x
        scale = (self.eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)
        return torch.clamp(x + delta * scale, self.lo, self.hi)


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))
