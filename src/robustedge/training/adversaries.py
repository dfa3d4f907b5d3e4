"""Training adversaries: how a batch becomes a robust loss.

Each adversary has ``loss(model, x, y, task_loss) -> scalar``, made of two steps:
``examples(model, x, y)`` (the batch the model trains on: adversarial, clean or both) and
``objective(model, x, y, x_used, task_loss)`` (the loss on them; ``model`` is only called).
Splitting them lets :class:`robustedge.training.awp.AWP` evaluate the same examples at
perturbed weights. ``task_loss(logits, y, x_used)`` is the objective on the examples actually
fed to the model (cross-entropy, or cross-entropy + distillation from a teacher evaluated on the
same ``x_used``), so the same adversaries serve plain training, distillation and compression.
Adversaries register in ``ADVERSARIES`` (the on-manifold ones live in
:mod:`robustedge.training.manifold_adversaries`; the package ``__init__`` imports every
adversary module, as ``robustedge.attacks`` does).

Every random start draws from the adversary's own CPU ``generator`` (seeded per run and per
rank with :meth:`TrainingAdversary.seed`), never from the global RNG, so a checkpoint can hold
its state and a resumed run draws the same starts as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustedge.attacks import FGSM, PGD
from robustedge.attacks.trades import TradesKL
from robustedge.registry import Registry

TaskLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ADVERSARIES: Registry = Registry("adversary")
TRADES_BETA = 6.0  # TRADES' trade-off weight (Zhang et al. 2019)
TRAIN_STEPS = 10  # the one default of the iterative training adversaries' steps (PGD, TRADES)


def ce_task_loss(logits: torch.Tensor, y: torch.Tensor, x_used: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


class TrainingAdversary:
    name = "none"

    def __init__(self, eps: float = 0.0, steps: int = 0, **kwargs: Any) -> None:
        self.eps, self.steps = float(eps), int(steps)
        self.generator = torch.Generator()

    def seed(self, seed: int, rank: int = 0) -> None:
        """Seed the random starts: one stream per (run seed, rank)."""
        self.generator.manual_seed(int(seed) * 1_000_003 + 7919 * int(rank) + 1)

    def examples(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch the model trains on (here: the clean one)."""
        return x

    def objective(self, model, x: torch.Tensor, y: torch.Tensor, x_used: torch.Tensor, task_loss):
        """The loss on ``examples``' batch; ``model`` is any callable returning logits."""
        return task_loss(model(x_used), y, x_used)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, task_loss: TaskLoss):
        return self.objective(model, x, y, self.examples(model, x, y), task_loss)

    def describe(self) -> dict:
        return {"adversary": self.name, "eps": self.eps, "steps": self.steps}


ADVERSARIES.register("none")(TrainingAdversary)


@ADVERSARIES.register("fgsm")
class FGSMAdversary(TrainingAdversary):
    """FGSM-AT with a random start (Wong et al., 2020 "fast is better than free")."""

    name = "fgsm"

    def examples(self, model, x, y):
        u = torch.rand(x.shape, generator=self.generator).to(x.device)
        delta = (u * 2 - 1) * self.eps
        x0 = torch.clamp(x + delta, 0, 1)
        x_adv = FGSM(model, 1.25 * self.eps).perturb(x0, y)
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x - self.eps), x + self.eps), 0, 1)
        model.train()
        return x_adv


@ADVERSARIES.register("pgd")
class PGDAdversary(TrainingAdversary):
    """Madry PGD-AT: train on Linf PGD-K examples with a random start."""

    name = "pgd"

    def __init__(
        self, eps: float, steps: int = TRAIN_STEPS, alpha: Optional[float] = None, **kw: Any
    ):
        super().__init__(eps, steps or TRAIN_STEPS)
        self.alpha = alpha

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return PGD(
            model, self.eps, steps=self.steps, alpha=self.alpha, generator=self.generator
        ).perturb(x, y)

    def examples(self, model, x, y):
        return self.craft(model, x, y)


@ADVERSARIES.register("trades")
class TradesAdversary(TrainingAdversary):
    """TRADES (Zhang et al., 2019): task loss on clean x + beta * KL(f(x) || f(x_adv)).

    x_adv maximises the KL within the eps-ball (:class:`~robustedge.attacks.trades.TradesKL`).
    """

    name = "trades"

    def __init__(
        self, eps: float, steps: int = TRAIN_STEPS, beta: float = TRADES_BETA, **kw: Any
    ) -> None:
        super().__init__(eps, steps or TRAIN_STEPS)
        self.beta = float(beta)

    def craft(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        attack = TradesKL(model, self.eps, steps=self.steps, generator=self.generator)
        return attack.perturb(x, x.new_zeros(len(x)).long())

    def examples(self, model, x, y):
        return self.craft(model, x)

    def objective(self, model, x, y, x_adv, task_loss):
        logits = model(x)
        kl = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
        return task_loss(logits, y, x) + self.beta * kl

    def describe(self) -> dict:
        return {**super().describe(), "beta": self.beta}


def build_adversary(name: str, eps: float = 0.0, steps: int = 0, **kwargs: Any):
    """Build a registered training adversary by name."""
    return ADVERSARIES.get(name)(eps=eps, steps=steps, **kwargs)
