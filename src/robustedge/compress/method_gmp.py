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
from typing import List, Tuple

from robustedge.compress.common import PRUNERS, PruneContext, PruneOutcome, make_optimizer
from robustedge.compress.prox import topk_masks
from robustedge.compress.schedule import polynomial_sparsity, should_prune
from robustedge.compress.targets import MaskKeeper, apply_masks, global_sparsity

logger = logging.getLogger(__name__)


def gmp_steps(cfg, steps_per_epoch: int) -> Tuple[int, int]:
    """(begin_step, end_step) of the schedule in optimizer steps of the pruning phase."""
    total = cfg.epochs * steps_per_epoch
    end = cfg.gmp_end_step if cfg.gmp_end_step is not None else total
    return cfg.gmp_begin_step, end


@PRUNERS.register("gmp")
def gmp_prune(ctx: PruneContext) -> PruneOutcome:
    cfg = ctx.cfg
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
        if should_prune(t, begin, end, cfg.gmp_frequency):
            target = polynomial_sparsity(
                t, cfg.gmp_initial_sparsity, cfg.sparsity, begin, end, cfg.gmp_power
            )
            keeper.masks = topk_masks(scores(), target, cfg.scope.value)
            updates.append((t, target))
        keeper(model)

    if should_prune(0, begin, end, cfg.gmp_frequency):  # step 0 is a pruning turn too
        target = polynomial_sparsity(
            0, cfg.gmp_initial_sparsity, cfg.sparsity, begin, end, cfg.gmp_power
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
