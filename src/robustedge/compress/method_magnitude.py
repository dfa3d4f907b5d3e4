"""Magnitude baseline (HYDRA's "LWM"): global top-k of |W| of the teacher, then the robust
masked fine-tune. It has no pruning phase, so its fine-tune gets the whole epoch budget
(``epochs + finetune_epochs``) to keep the comparison at the same number of epochs.

Structured (``--structured``): the channels with the smallest L1 norm (Li et al., "Pruning
Filters for Efficient ConvNets", ICLR 2017), ranked per layer by default, are removed
physically with their coupled slices; the baseline of structured prox."""

from __future__ import annotations

import logging

from robustedge.compress.common import PruneContext, PruneOutcome
from robustedge.compress.config import register_method
from robustedge.compress.prox import topk_masks
from robustedge.compress.structured import channel_groups, channel_keep_masks, shrink
from robustedge.compress.targets import apply_masks

logger = logging.getLogger(__name__)


@register_method("magnitude", structured=True)
def magnitude_prune(ctx: PruneContext) -> PruneOutcome:
    cfg = ctx.cfg
    if cfg.structured:
        return _structured(ctx)
    masks = topk_masks(
        {n: p.detach().abs() for n, p in ctx.params.items()}, cfg.sparsity, cfg.scope.value
    )
    apply_masks(ctx.params, masks)
    return PruneOutcome(masks, cfg.epochs + cfg.finetune_epochs)


def _structured(ctx: PruneContext) -> PruneOutcome:
    cfg = ctx.cfg
    groups = channel_groups(ctx.model, ctx.input_shape, cfg.include_first, cfg.include_last)
    keep = channel_keep_masks(
        groups, cfg.sparsity, cfg.scope.value, score="l1", per_layer=cfg.layer_sparsity
    )
    notes = shrink(ctx.model, ctx.input_shape, groups, keep)
    logger.info("L1 channel pruning removed %d channels", notes["channels_removed"])
    return PruneOutcome(None, cfg.epochs + cfg.finetune_epochs, notes)
