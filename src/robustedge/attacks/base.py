"""The attack base class (torchattacks' layout, without its eval-based dispatch).

Subclasses implement one method, ``_perturb(x, y) -> x_adv``. The base puts the model in
eval mode and restores its previous mode, moves data to the model's device, and clamps to
the valid input range ``[lo, hi]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from robustedge.registry import Registry

ATTACKS: Registry = Registry("attack")

# eps: Linf budget in [0, 1] pixel units, also the fallback for runs trained without one. The
# other evaluation defaults (steps, restarts) are declared by each attack class
# (Attack.default_steps / default_restarts) and read through ATTACKS.
DEFAULT_EPS = 0.1


def eps_or_default(eps: Optional[float]) -> float:
    """A run's eps when it has one (> 0), else :data:`DEFAULT_EPS`."""
    return float(eps) if eps and eps > 0 else DEFAULT_EPS


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

    @classmethod
    def default(
        cls,
        name: str,
        eps: float = DEFAULT_EPS,
        steps: Optional[int] = None,
        restarts: Optional[int] = None,
        **params: Any,
    ) -> AttackSpec:
        """The evaluation default of registered attack ``name``: the ``default_steps`` /
        ``default_restarts`` its class declares (PGD-20 x 5 restarts, APGD-100, Square-1000
        queries, ...). ``steps`` / ``restarts`` override them where the attack has such a
        setting and are ignored where it has none (FGSM has neither, TRADES no restarts), so
        the spec records what the attack runs."""
        attack = ATTACKS.get(name)
        takes_steps = attack.default_steps > 0
        return cls(
            name,
            eps,
            steps=attack.default_steps if steps is None or not takes_steps else steps,
            restarts=(
                attack.default_restarts if restarts is None or not attack.has_restarts else restarts
            ),
            params=params,
        )

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> AttackSpec:
        """Inverse of :meth:`to_dict` (extra keys of an evaluation row are ignored)."""
        return cls(
            d["attack"] if "attack" in d else d["name"],
            float(d["eps"]),
            steps=int(d.get("steps", 0)),
            restarts=int(d.get("restarts", 1)),
            norm=d.get("norm", "linf"),
            params=dict(d.get("params", {})),
        )

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def resolved(self) -> AttackSpec:
        """This spec with the steps and restarts its registered attack runs (steps 0 is the
        attack's ``default_steps``): what results record. A setting the attack does not have
        is refused (:meth:`Attack.spec_settings`)."""
        steps, restarts = ATTACKS.get(self.name).spec_settings(self)
        return replace(self, steps=steps, restarts=restarts)

    def record(self, with_params: bool = True) -> Dict[str, Any]:
        """How results name the attack: ``{attack, eps, steps, restarts, norm, **params}``
        (every robust accuracy is written next to this)."""
        row = {
            "attack": self.name,
            "eps": self.eps,
            "steps": self.steps,
            "restarts": self.restarts,
            "norm": self.norm,
        }
        return {**row, **self.params} if with_params else row

    def label(self) -> str:
        s = f"{self.name}-{self.norm} eps={self.eps:g}"
        if self.steps:
            s += f" steps={self.steps}"
        if self.restarts > 1:
            s += f" restarts={self.restarts}"
        return s


class Attack:
    """Base: ``perturb(x, y) -> x_adv`` with ``||x_adv - x|| <= eps`` and ``lo <= x_adv <= hi``.

    Each registered attack declares its evaluation defaults here, once: ``default_steps``
    (iterations, or queries for Square: ``steps_name``; 0 = the attack takes no steps),
    ``default_restarts``, whether it ``has_restarts`` at all, and ``short_name``, its name in
    compact labels (``PGD-20x5``); ``budget`` names what its eps means and ``needs`` the
    resources it is given besides the model. :meth:`AttackSpec.default`, :meth:`from_spec`
    and the evaluation's help texts read them.
    """

    name = "attack"
    short_name = "attack"
    default_steps = 0
    steps_name = "steps"  # what the spec's steps count ("queries" for Square)
    default_restarts = 1
    has_restarts = False
    budget = "eps"  # what AttackSpec.eps means for this attack (on-manifold: latent "eta")
    needs: Tuple[str, ...] = ()  # resources the evaluation passes to the constructor

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
        """Build from a spec; subclasses map steps/restarts (see :meth:`spec_settings`) and
        params to their arguments."""
        cls.spec_settings(spec)
        return cls(model, spec.eps, **{**spec.params, **kwargs})

    @classmethod
    def spec_settings(cls, spec: AttackSpec) -> Tuple[int, int]:
        """``(steps, restarts)`` this attack runs for ``spec``: steps 0 means
        ``default_steps``; a setting the attack does not have (steps of FGSM, restarts of a
        one-run attack) is refused rather than recorded but not run."""
        if cls.default_steps == 0 and spec.steps != 0:
            raise ValueError(f"attack '{spec.name}' takes no steps, got steps={spec.steps}")
        if not cls.has_restarts and spec.restarts != 1:
            raise ValueError(f"attack '{spec.name}' has no restarts, got restarts={spec.restarts}")
        return spec.steps or cls.default_steps, spec.restarts

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        device = model_device(self.model)
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


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def budget_name(attack: str) -> str:
    """What an attack's eps is called in labels: ``eps`` (pixels), ``eta`` for on-manifold
    (latent units); ``eps`` for a name not registered here (old results)."""
    return ATTACKS[attack].budget if attack in ATTACKS else "eps"


def build_attack(model: nn.Module, spec: AttackSpec, **kwargs: Any) -> Attack:
    """Instantiate a registered attack from its spec."""
    cls = ATTACKS.get(spec.name)
    return cls.from_spec(model, spec, **kwargs)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels of ``x`` (N x C x H x W) in eval mode, in batches; the model's
    previous mode is restored."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        out = [
            model(x[i : i + batch_size].to(device)).argmax(1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)
