"""ADMM robust pruning (Ye et al., ICCV 2019), the memory-hungry baseline.

Loss: ``robust task loss + sum_l rho/2 ||W_l - Z_l + U_l||^2``. At the end of every epoch:
``Z = top-k projection of (W + U)`` (same scope as the target), ``U += W - Z``,
``rho *= 1.3`` (for longer phases the growth is spread so that rho grows at most
``1.3^10`` in all: a rho that keeps growing 1.3x per epoch over 40 epochs (36000x) lets the
penalty swamp the robust loss and leaves a dead network at 99 % sparsity). Afterwards W is
hard-pruned by magnitude and retrained with the mask fixed (the pipeline's masked fine-tune).
Z and U are dense, weight-sized tensors per pruned layer: 2x the prunable weights of extra
state, which the memory ledger records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict

import torch

from robustedge.compress.common import PruneContext, PruneOutcome, make_optimizer
from robustedge.compress.config import MethodOptions, positive, register_method
from robustedge.compress.prox import project_topk, topk_masks
from robustedge.compress.targets import apply_masks
from robustedge.config import setting

logger = logging.getLogger(__name__)
RHO_GROWTH = 1.3
RHO_UPDATES = 10  # rho grows by at most RHO_GROWTH ** RHO_UPDATES over the ADMM phase
RHO_HELP = (
    "ADMM's initial penalty weight rho (it grows at most 1.3^10-fold over the phase; prox uses "
    "it with --admm-warm)."
)


@dataclass(frozen=True)
class AdmmOptions(MethodOptions):
    """ADMM's own setting."""

    admm_rho: float = setting(0.01, help=RHO_HELP)

    def __post_init__(self) -> None:
        positive(self, "admm_rho")


class ADMMState:
    """Z (auxiliary, sparse) and U (scaled dual) for every prunable weight."""

    def __init__(
        self,
        params: Dict[str, torch.nn.Parameter],
        sparsity: float,
        scope: str,
        rho: float,
        growth: float = RHO_GROWTH,
    ) -> None:
        self.params, self.sparsity, self.scope, self.rho = params, sparsity, scope, rho
        self.growth = growth
        with torch.no_grad():
            self.Z = project_topk({n: p.detach() for n, p in params.items()}, sparsity, scope)
            self.U = {n: torch.zeros_like(p) for n, p in params.items()}

    def penalty(self) -> torch.Tensor:
        return sum(
            0.5 * self.rho * (p - self.Z[n] + self.U[n]).pow(2).sum()
            for n, p in self.params.items()
        )

    def update(self) -> None:
        with torch.no_grad():
            wu = {n: p.detach() + self.U[n] for n, p in self.params.items()}
            self.Z = project_topk(wu, self.sparsity, self.scope)
            for n, p in self.params.items():
                self.U[n] += p.detach() - self.Z[n]
        self.rho *= self.growth

    def end_epoch(self, record: Dict[str, float]) -> None:
        """ADMM's per-epoch Z / U / rho update, recorded in the epoch's history ``record``."""
        self.update()
        record["admm_residual"] = self.residual()
        record["rho"] = self.rho

    def tensors(self):
        return list(self.Z.values()) + list(self.U.values())

    def residual(self) -> float:
        """Relative primal residual ||W - Z|| / ||W||."""
        num = sum(float((p.detach() - self.Z[n]).pow(2).sum()) for n, p in self.params.items())
        den = sum(float(p.detach().pow(2).sum()) for p in self.params.values())
        return (num / max(den, 1e-12)) ** 0.5


def admm_state(ctx: PruneContext, epochs: int) -> ADMMState:
    """ADMM's state for ``epochs`` epochs of pull (rho's growth spread over them), its rho
    registered for checkpoints. rho is ``ctx.cfg.options.admm_rho`` (ADMM's own, or prox's
    for its ADMM warm start)."""
    cfg = ctx.cfg
    growth = RHO_GROWTH ** min(1.0, RHO_UPDATES / max(1, epochs))
    rho = cfg.options.admm_rho
    state = ADMMState(ctx.params, cfg.sparsity, cfg.scope.value, rho, growth)
    ctx.keep_state("admm", lambda: state.rho, lambda rho: setattr(state, "rho", float(rho)))
    return state


@register_method("admm", options=AdmmOptions)
def admm_prune(ctx: PruneContext) -> PruneOutcome:
    cfg = ctx.cfg
    state = admm_state(ctx, cfg.epochs)
    optimizer = make_optimizer(ctx.model.parameters(), cfg)
    base = ctx.task_loss

    def task_loss(logits, y, x_used):
        return base(logits, y, x_used) + state.penalty()

    ctx.fit(
        optimizer,
        cfg.epochs,
        "admm",
        task_loss=task_loss,
        method_state=state.tensors,
        epoch_hook=state.end_epoch,
    )
    masks = topk_masks(
        {n: p.detach().abs() for n, p in ctx.params.items()}, cfg.sparsity, cfg.scope.value
    )
    apply_masks(ctx.params, masks)
    return PruneOutcome(
        masks, cfg.finetune_epochs, {"admm_residual": state.residual(), "final_rho": state.rho}
    )


class ADMMWarmStart:
    """ADMM's pull as the warm start of another method's pruning phase (prox ``admm_warm``).

    For the first ``steps`` optimizer steps (the dense part of the phase, before prox's ramp)
    the loss gains ADMM's ``rho/2 ||W - Z + U||^2`` and Z / U are updated at every epoch end,
    as in :func:`admm_prune` over ``epochs`` epochs; afterwards the loss is the base loss
    again. The weights stay dense meanwhile: the pull only decides which ones are small when
    the ramp begins, so the budget per layer is ADMM's rather than the teacher's magnitudes'.
    """

    def __init__(self, ctx: PruneContext, steps: int, epochs: int, clock: Dict[str, int]) -> None:
        self.state = admm_state(ctx, epochs)
        self.steps, self.clock = steps, clock

    def active(self) -> bool:
        return self.clock["t"] < self.steps

    def task_loss(self, base):
        def loss(logits, y, x_used):
            out = base(logits, y, x_used)
            return out + self.state.penalty() if self.active() else out

        return loss

    def epoch_end(self, record: Dict[str, float]) -> None:
        if self.clock["t"] <= self.steps:
            self.state.end_epoch(record)

    def tensors(self):
        return self.state.tensors()
