"""The attack base class (torchattacks' layout, without its eval-based dispatch).

Subclasses implement one method, ``_perturb(x, y) -> x_adv``. The base puts the model in
eval mode and restores its previous mode, moves data to the model's device, and clamps to
the valid input range ``[lo, hi]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from robustedge.registry import Registry

ATTACKS: Registry = Registry("attack")


@dataclass(frozen=True)
class AttackSpec:
    """An attack and its settings, as reported next to every robust accuracy."""

    name: str
    eps: float
    steps: int = 0
    restarts: int = 1
    norm: str = "linf"
    params: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.eps >= 0):  # also rejects NaN
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.steps < 0 or self.restarts < 1:
            raise ValueError(
                f"steps must be >= 0 and restarts >= 1 ({self.steps}, {self.restarts})"
            )
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got '{self.norm}'")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        s = f"{self.name}-{self.norm} eps={self.eps:g}"
        if self.steps:
            s += f" steps={self.steps}"
        if self.restarts > 1:
            s += f" restarts={self.restarts}"
        return s


class Attack:
    """Base: ``perturb(x, y) -> x_adv`` with ``||x_adv - x|| <= eps`` and ``lo <= x_adv <= hi``."""

    name = "attack"

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        bounds: Tuple[float, float] = (0.0, 1.0),
        generator: Optional[torch.Generator] = None,
    ) -> None:
        if not (eps >= 0):
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.model = model
        self.eps = float(eps)
        self.lo, self.hi = bounds
        self.generator = generator  # CPU generator for random starts / proposals

    @classmethod
    def from_spec(cls, model: nn.Module, spec: AttackSpec, **kwargs: Any) -> Attack:
        """Build from a spec; subclasses map steps/restarts/params to their arguments."""
        return cls(model, spec.eps, **{**spec.params, **kwargs})

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        device = _model_device(self.model)
        self.model.eval()
        try:
            x, y = x.detach().to(device), y.to(device)
            if self.eps == 0:
                return x.clone()
            x_adv = self._perturb(x, y)
            return self.project(x_adv.detach(), x)
        finally:
            self.model.train(was_training)

    __call__ = perturb

    def _perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Linf projection onto the eps-ball around x intersected with the input range."""
        delta = torch.clamp(x_adv - x, -self.eps, self.eps)
        return torch.clamp(x + delta, self.lo, self.hi)

    def loss_grad(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-sample cross-entropy and its gradient w.r.t. x."""
        x = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(self.model(x), y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad.detach()


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def build_attack(model: nn.Module, spec: AttackSpec, **kwargs: Any) -> Attack:
    """Instantiate a registered attack from its spec."""
    cls = ATTACKS.get(spec.name)
    return cls.from_spec(model, spec, **kwargs)
