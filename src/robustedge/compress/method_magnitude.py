"""Magnitude baseline (HYDRA's "LWM"): global top-k of |W| of the teacher, then the robust
masked fine-tune. It has no pruning phase, so its fine-tune gets the whole epoch budget
(``epochs + finetune_epochs``) to keep the comparison at the same number of epochs."""

from __future__ import annotations

from robustedge.compress.common import PRUNERS, PruneContext, PruneOutcome
from robustedge.compress.prox import topk_masks
from robustedge.compress.targets import apply_masks


@PRUNERS.register("magnitude")
def magnitude_prune(ctx: PruneContext) -> PruneOutcome:
    cfg = ctx.cfg
    masks = topk_masks(
        {n: p.detach().abs() for n, p in ctx.params.items()}, cfg.sparsity, cfg.scope.value
    )
    apply_masks(ctx.params, masks)
    return PruneOutcome(masks, cfg.epochs + cfg.finetune_epochs)
