"""Gradual magnitude pruning with TF-MOT's polynomial schedule (Zhu & Gupta 2017), the path a
TensorFlow user takes with ``tfmot.sparsity.keras.prune_low_magnitude``.

Training runs with the configured adversary (``--adversary none`` gives TF-MOT's plain
training, anything else makes it adversarial). Every ``gmp_frequency`` optimizer steps inside
``[begin_step, end_step]`` the mask is recomputed: the smallest-magnitude weights are zeroed
up to ``PolynomialDecay(initial_sparsity, final_sparsity=sparsity, begin_step, end_step,
power)`` (TF-MOT: each layer to that sparsity, ``--scope layer``; ``--scope global`` ranks all
prunable weights together). Between updates the mask is re-applied after every step and the
optimizer moments of pruned weights are cleared, so a pruned weight stays zero (as TF-MOT's
masked kernel). ``end_step`` defaults to the last step of the pruning phase. A final exact
top-k projection lands on ``sparsity`` (TF-MOT only reaches it when ``end_step`` falls on a
pruning turn); the pipeline's masked fine-tune follows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

from robustedge.compress.common import PruneContext, PruneOutcome, make_optimizer
from robustedge.compress.config import CompressConfig, MethodOptions, register_method
from robustedge.compress.prox import topk_masks
from robustedge.compress.schedule import polynomial_sparsity, should_prune
from robustedge.compress.targets import MaskKeeper, apply_masks, global_sparsity
from robustedge.config import FieldError, setting

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GmpOptions(MethodOptions):
    """GMP's schedule: TF-MOT's ``PolynomialDecay`` from ``gmp_initial_sparsity`` at
    ``gmp_begin_step`` to the target at ``gmp_end_step``, a mask every ``gmp_frequency`` steps."""

    gmp_initial_sparsity: float = setting(
        0.0, help="Sparsity at the begin step (TF-MOT PolynomialDecay)."
    )
    gmp_begin_step: int = setting(0, help="First step of the schedule.")
    gmp_end_step: Optional[int] = setting(
        None, help="Step the final sparsity is due [default: end of the pruning phase]."
    )
    gmp_frequency: int = setting(100, help="Steps between masks.")
    gmp_power: float = setting(3.0, help="Power of the polynomial decay (TF-MOT's 3: cubic).")

    def __post_init__(self) -> None:
        for key, bad in (
            ("gmp_begin_step", self.gmp_begin_step < 0),
            ("gmp_frequency", self.gmp_frequency < 1),
            ("gmp_power", not (self.gmp_power > 0)),
        ):
            if bad:
                raise FieldError(key, "gmp needs begin_step >= 0, frequency >= 1 and power > 0")
        if self.gmp_end_step is not None and self.gmp_end_step < self.gmp_begin_step:
            raise FieldError(
                "gmp_end_step",
                f"gmp end_step ({self.gmp_end_step}) is before begin_step ({self.gmp_begin_step})",
            )

    def check(self, cfg: CompressConfig) -> None:
        if not (0.0 <= self.gmp_initial_sparsity <= cfg.sparsity):
            raise FieldError(
                "gmp_initial_sparsity",
                f"gmp initial sparsity must lie in [0, sparsity], got {self.gmp_initial_sparsity}",
            )


def gmp_steps(cfg: CompressConfig, steps_per_epoch: int) -> Tuple[int, int]:
    """(begin_step, end_step) of the schedule in optimizer steps of the pruning phase."""
    opts = cfg.options
    total = cfg.epochs * steps_per_epoch
    end = opts.gmp_end_step if opts.gmp_end_step is not None else total
    return opts.gmp_begin_step, end


@register_method("gmp", options=GmpOptions)
def gmp_prune(ctx: PruneContext) -> PruneOutcome:
    cfg = ctx.cfg
    opts: GmpOptions = cfg.options  # type: ignore[assignment]
    params = ctx.params
    begin, end = gmp_steps(cfg, ctx.steps_per_epoch)
    optimizer = make_optimizer(ctx.model.parameters(), cfg)
    scores = lambda: {n: p.detach().abs() for n, p in params.items()}  # noqa: E731
    keeper = MaskKeeper(params, {n: p.detach() == p.detach() for n, p in params.items()}, optimizer)
    updates: List[Tuple[int, float]] = []
    state = {"step": 0}

    def load(saved: dict) -> None:  # resume (see PruneContext.keep_state)
        state["step"] = int(saved["step"])
        updates[:] = [(int(t), float(s)) for t, s in saved["updates"]]

    ctx.keep_state("gmp", lambda: {"step": state["step"], "updates": updates[:]}, load)

    def after_step(model) -> None:
        # TF-MOT's step counter: the mask update of step t happens before batch t's forward;
        # after our step t - 1 is the same point.
        t = state["step"] = state["step"] + 1
        if should_prune(t, begin, end, opts.gmp_frequency):
            target = polynomial_sparsity(
                t, opts.gmp_initial_sparsity, cfg.sparsity, begin, end, opts.gmp_power
            )
            keeper.masks = topk_masks(scores(), target, cfg.scope.value)
            updates.append((t, target))
        keeper(model)

    if should_prune(0, begin, end, opts.gmp_frequency):  # step 0 is a pruning turn too
        target = polynomial_sparsity(
            0, opts.gmp_initial_sparsity, cfg.sparsity, begin, end, opts.gmp_power
        )
        keeper.masks = topk_masks(scores(), target, cfg.scope.value)
        apply_masks(params, keeper.masks)
        updates.append((0, target))
    ctx.fit(
        optimizer,
        cfg.epochs,
        "gmp",
        after_step=after_step,
        method_state=lambda: list(keeper.masks.values()),
    )
    reached = global_sparsity(params.values())
    masks = topk_masks(scores(), cfg.sparsity, cfg.scope.value)
    apply_masks(params, masks)
    logger.info(
        "gmp: %d mask updates, reached %.4f, projected to %g", len(updates), reached, cfg.sparsity
    )
    return PruneOutcome(
        masks,
        cfg.finetune_epochs,
        {
            "gmp_sparsity": reached,
            "gmp_updates": [[t, s] for t, s in updates],
            "gmp_begin_step": begin,
            "gmp_end_step": end,
        },
    )
