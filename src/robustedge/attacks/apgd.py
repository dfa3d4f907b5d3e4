"""APGD-CE and APGD-DLR (Croce & Hein, ICML 2020), AutoAttack's white-box pair, Linf.

Auto-PGD needs no step size: it starts at ``2 eps`` and halves it at checkpoints
``w_j = ceil(p_j N)`` with ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
0.06)`` (integer form as in the reference code: intervals of ``0.22 N`` shrinking by
``0.03 N`` down to ``0.06 N``) when, per sample, either

1. fewer than ``rho = 0.75`` of the steps since the last checkpoint raised the loss, or
2. the step size was not reduced at the last checkpoint and the best loss has not improved
   since then;

after a reduction the sample restarts from its best point so far. Each step has momentum:
``z = P(x_k + eta sign(grad))``, ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))``
with ``a = 0.75`` (1 on the first step). The start is a random point on the Linf sphere of
radius eps. With several restarts, each sample keeps the first restart that fools the model
(else the one with the highest loss); only the samples not yet fooled are attacked again.

Losses: cross-entropy (APGD-CE) and the Difference of Logits Ratio (APGD-DLR), the untargeted
(target-free) form ``DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``, with ``z_pi``
the logits sorted in decreasing order: invariant to shifts and rescaling of the logits, so
it is not fooled by saturated softmax outputs. DLR needs at least 3 classes.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
import torch.nn as nn

from robustedge.attacks.base import ATTACKS, Attack, AttackSpec

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(n_iter: int) -> List[int]:
    """Iterations (1-based counts) after which the step-size conditions are checked.

    The paper's ``p_j`` schedule in the reference implementation's integer form: the first
    interval is ``int(0.22 N)`` steps, every next one ``max(int(0.03 N), 1)`` shorter, never
    shorter than ``max(int(0.06 N), 1)``. For N = 100: 22, 41, 57, 70, 80, 87, 93, 99.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    k = max(int(0.22 * n_iter), 1)
    decr, k_min = max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    out, at = [], k
    while at <= n_iter:
        out.append(at)
        k = max(k - decr, k_min)
        at += k
    return out


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample untargeted DLR loss (higher = closer to misclassified), shape (n,)."""
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    srt, _ = logits.sort(dim=1, descending=True)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = srt[:, 0] == z_y
    z_other = torch.where(top_is_y, srt[:, 1], srt[:, 0])  # max over i != y
    return -(z_y - z_other) / (srt[:, 0] - srt[:, 2] + 1e-12)


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, y, reduction="none")


class APGD(Attack):
    """Auto-PGD, Linf, with ``steps`` iterations per restart; ``loss`` is 'ce' or 'dlr'."""

    name = "apgd"
    loss = "ce"
    default_steps = 100  # AutoAttack's standard version: 100 iterations, one run
    has_restarts = True

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = default_steps,
        restarts: int = 1,
        norm: str = "linf",
        momentum: float = MOMENTUM,
        rho: float = RHO,
        bounds: Tuple[float, float] = (0.0, 1.0),
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(model, eps, bounds, generator)
        if steps < 1 or restarts < 1:
            raise ValueError(f"APGD needs steps >= 1 and restarts >= 1, got {steps}, {restarts}")
        if norm != "linf":
            raise ValueError(f"APGD is implemented for norm 'linf' only, got '{norm}'")
        if not (0.0 < momentum <= 1.0) or not (0.0 < rho <= 1.0):
            raise ValueError(f"APGD needs 0 < momentum <= 1 and 0 < rho <= 1 ({momentum}, {rho})")
        self.steps, self.restarts, self.momentum, self.rho = steps, restarts, momentum, rho
        self._loss_fn = dlr_loss if self.loss == "dlr" else ce_loss

    @classmethod
    def from_spec(cls, model: nn.Module, spec: AttackSpec, **kwargs: Any) -> APGD:
        steps, restarts = cls.spec_settings(spec)
        params = {**spec.params, **kwargs}
        return cls(model, spec.eps, steps=steps, restarts=restarts, norm=spec.norm, **params)

    def _loss_grad(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-sample loss, gradient w.r.t. x, fooled flags)."""
        x = x.clone().requires_grad_(True)
        logits = self.model(x)
        loss = self._loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad.detach(), logits.detach().argmax(1) != y

    def _perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        best = x.clone()
        best_loss = torch.full((len(x),), -float("inf"), device=x.device)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            todo = (~done).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            x_adv, loss, fooled = self._one_run(x[todo], y[todo])
            take = fooled | (loss > best_loss[todo])
            best[todo[take]] = x_adv[take]
            best_loss[todo[take]] = loss[take]
            done[todo[fooled]] = True
        return best

    def _one_run(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run: (point per sample, its loss, whether it fools the model)."""
        n, view = len(x), (-1,) + (1,) * (x.dim() - 1)
        t = 2 * torch.rand(x.shape, generator=self.generator, device="cpu").to(x.device) - 1
        t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(view)
        x_adv = self.project(x + self.eps * t, x)
        loss, grad, fooled = self._loss_grad(x_adv, y)
        x_fool = x_adv.clone()  # the first fooling point of each sample
        x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
        step = torch.full((n,), 2.0 * self.eps, device=x.device)
        x_old, prev_loss = x_adv.clone(), loss
        ups = torch.zeros(n, device=x.device)  # steps that raised the loss since the check
        best_at_check, reduced_at_check = loss_best.clone(), torch.ones(n, dtype=torch.bool)
        reduced_at_check = reduced_at_check.to(x.device)
        checks, last = set(checkpoints(self.steps)), 0
        for i in range(self.steps):
            a = self.momentum if i > 0 else 1.0
            change, x_old = x_adv - x_old, x_adv
            z = self.project(x_adv + step.view(view) * grad.sign(), x)
            x_adv = self.project(x_adv + a * (z - x_adv) + (1 - a) * change, x)
            loss, grad, now_fooled = self._loss_grad(x_adv, y)
            new = now_fooled & ~fooled
            x_fool[new] = x_adv[new]
            fooled |= now_fooled
            ups += (loss > prev_loss).float()
            prev_loss = loss
            better = loss > loss_best
            x_best[better], grad_best[better] = x_adv[better], grad[better]
            loss_best = torch.where(better, loss, loss_best)
            if i + 1 in checks:
                oscillating = ups < self.rho * (i + 1 - last)  # condition 1
                stalled = ~reduced_at_check & (best_at_check >= loss_best)  # condition 2
                reduce = oscillating | stalled
                step = torch.where(reduce, step / 2, step)
                x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
                reduced_at_check, best_at_check = reduce, loss_best.clone()
                ups.zero_()
                last = i + 1
        out = torch.where(fooled.view(view), x_fool, x_best)
        return out, loss_best, fooled


@ATTACKS.register("apgd-ce")
class APGDCE(APGD):
    """APGD on the cross-entropy loss."""

    name = "apgd-ce"
    short_name = "APGD-CE"
    loss = "ce"


@ATTACKS.register("apgd-dlr")
class APGDDLR(APGD):
    """APGD on the untargeted Difference of Logits Ratio loss (needs >= 3 classes)."""

    name = "apgd-dlr"
    short_name = "APGD-DLR"
    loss = "dlr"
