"""Standard AutoAttack's four attacks (Croce & Hein, ICML 2020), from torchattacks (pinned).

The field reports robustness under standard AutoAttack, Linf: APGD-CE (100 steps), APGD-T
(100 steps for each of the 9 highest non-true classes), FAB-T (100 steps, 9 targets) and
Square (5000 queries), an image counting as robust only if all four fail on it. Each attack is
registered here on its own (``autoattack-apgd-ce``, ``autoattack-apgd-t``,
``autoattack-fab-t``, ``autoattack-square``) so the ``autoattack`` suite
(:mod:`robustedge.attacks.suite`) records each one's settings and takes the worst case per
image with robustedge's own rule.

Steps are given explicitly: torchattacks' ``AutoAttack`` wrapper leaves its components at 10
steps, the reference implementation (fra31/auto-attack) runs 100. The targeted attacks take
``n_classes - 1`` targets (9 on 10 classes, the standard). torchattacks seeds torch's global
random generator inside each attack; here that happens inside ``torch.random.fork_rng``, so
the caller's random streams are untouched, and the seed comes from the generator robustedge
passes (one seed per suite evaluation). Inputs must lie in [0, 1] (torchattacks' range).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn as nn

from robustedge.attacks.base import ATTACKS, Attack
from robustedge.errors import RobustEdgeError

IMPLEMENTATION = "torchattacks"
AA_STEPS = 100  # APGD-CE, APGD-T and FAB-T iterations in standard AutoAttack
AA_QUERIES = 5000  # Square's queries in standard AutoAttack


def torchattacks() -> Any:
    """The torchattacks module; a one-line error when it is not installed."""
    try:
        import torchattacks as ta
    except ImportError:
        raise RobustEdgeError(
            "the autoattack suite runs torchattacks: pip install --no-deps torchattacks==3.5.1 "
            "(requirements/nodeps.txt)"
        ) from None
    return ta


def implementation() -> str:
    """``torchattacks 3.5.1``: the package and version that runs these attacks (``not
    installed`` when it is missing: the suite is still listed, running it fails in one line)."""
    try:
        import torchattacks as ta
    except ImportError:
        return f"{IMPLEMENTATION} (not installed)"
    return f"{IMPLEMENTATION} {ta.__version__}"


class TorchattacksAttack(Attack):
    """One torchattacks attack behind robustedge's :class:`Attack` (eval mode, device,
    projection onto the eps-ball and [0, 1] by the base)."""

    default_steps = AA_STEPS

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = 0,
        bounds: Tuple[float, float] = (0.0, 1.0),
        generator: Optional[torch.Generator] = None,
    ) -> None:
        if tuple(bounds) != (0.0, 1.0):
            raise ValueError(f"torchattacks' attacks need inputs in [0, 1], not {bounds}")
        super().__init__(model, eps, bounds, generator)
        self.steps = int(steps) or self.default_steps

    @classmethod
    def from_spec(cls, model: nn.Module, spec: Any, **kwargs: Any) -> Attack:
        steps, _ = cls.spec_settings(spec)
        return cls(model, spec.eps, steps=steps, **{**spec.params, **kwargs})

    def build(self, n_classes: int, seed: int) -> Any:
        """The torchattacks attack object."""
        raise NotImplementedError

    def seed(self) -> int:
        """A seed for torchattacks from the generator robustedge passed (0 without one)."""
        if self.generator is None:
            return 0
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))

    def _perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            n_classes = int(self.model(x[:1]).shape[1])
        attack = self.build(n_classes, self.seed())
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return attack(x, y).detach()


@ATTACKS.register("autoattack-apgd-ce")
class AAApgdCE(TorchattacksAttack):
    """APGD with cross-entropy, one restart (AutoAttack's first attack)."""

    name = "autoattack-apgd-ce"
    short_name = "AA/APGD-CE"

    def build(self, n_classes: int, seed: int) -> Any:
        return torchattacks().APGD(
            self.model, norm="Linf", eps=self.eps, steps=self.steps, n_restarts=1, seed=seed,
            loss="ce",
        )  # fmt: skip


@ATTACKS.register("autoattack-apgd-t")
class AAApgdT(TorchattacksAttack):
    """Targeted APGD with the DLR loss over the ``n_classes - 1`` highest other classes."""

    name = "autoattack-apgd-t"
    short_name = "AA/APGD-T"

    def build(self, n_classes: int, seed: int) -> Any:
        return torchattacks().APGDT(
            self.model, norm="Linf", eps=self.eps, steps=self.steps, n_restarts=1, seed=seed,
            n_classes=n_classes,
        )  # fmt: skip


@ATTACKS.register("autoattack-fab-t")
class AAFabT(TorchattacksAttack):
    """Targeted FAB (minimum-norm, kept within eps) over the ``n_classes - 1`` targets."""

    name = "autoattack-fab-t"
    short_name = "AA/FAB-T"

    def build(self, n_classes: int, seed: int) -> Any:
        return torchattacks().FAB(
            self.model, norm="Linf", eps=self.eps, steps=self.steps, n_restarts=1, seed=seed,
            multi_targeted=True, n_classes=n_classes,
        )  # fmt: skip


@ATTACKS.register("autoattack-square")
class AASquare(TorchattacksAttack):
    """Square (score-based, margin loss), one restart; steps are queries."""

    name = "autoattack-square"
    short_name = "AA/Square"
    default_steps = AA_QUERIES
    steps_name = "queries"

    def build(self, n_classes: int, seed: int) -> Any:
        return torchattacks().Square(
            self.model, norm="Linf", eps=self.eps, n_queries=self.steps, n_restarts=1, seed=seed,
        )  # fmt: skip
