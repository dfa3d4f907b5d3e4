"""Paper 1's method: robust KD training with a proximal step after every optimizer step.

Unstructured: L1 soft threshold with step ``lr * lam``; lam is steered by
:class:`LamController` towards the target; an exact top-k projection lands on the target.
Structured: group soft threshold over output channels (with coupled BN affine parameters,
see :mod:`robustedge.compress.structured`), exact top-k over channels, then physical removal
of the zero channels with Torch-Pruning. The masked (or shrunk) fine-tune follows in the
pipeline. The prox keeps no state beyond the weights.
"""

from __future__ import annotations

import logging

import torch

from robustedge.compress.common import PRUNERS, PruneContext, PruneOutcome, make_optimizer
from robustedge.compress.prox import (
    reweighted_steps,
    soft_threshold,
    topk_masks,
    weighted_soft_threshold,
)
from robustedge.compress.schedule import LamController
from robustedge.compress.structured import (
    channel_groups,
    channel_keep_masks,
    channel_sparsity,
    group_prox,
    remove_channels,
    zero_channels,
)
from robustedge.compress.targets import apply_masks, global_sparsity

logger = logging.getLogger(__name__)
RAMP_FRACTION = 0.75  # share of the pruning phase over which the target ramps up
OVERSHOOT = 0.01  # skip the prox step while sparsity exceeds the schedule by this much


@PRUNERS.register("prox")
def prox_prune(ctx: PruneContext) -> PruneOutcome:
    """Prox phase for ``cfg.epochs``, then the exact projection (and removal if structured)."""
    cfg = ctx.cfg
    optimizer = make_optimizer(ctx.model.parameters(), cfg)
    ramp = max(1, int(RAMP_FRACTION * cfg.epochs * ctx.steps_per_epoch))
    if cfg.structured:
        groups = channel_groups(ctx.model, ctx.input_shape, cfg.include_first, cfg.include_last)
        scores = torch.cat([(g.sq_norms() / g.size_per_channel()).sqrt() for g in groups])
        return _structured(ctx, optimizer, _controller(cfg, scores, ramp), groups)
    params = list(ctx.params.values())
    if cfg.reweighted:  # magnitudes relative to the layer's mean, squared (see reweighted_steps)
        mags = torch.cat(
            [
                (p.detach().abs() / p.detach().abs().mean().clamp_min(1e-12)).flatten()
                for p in params
            ]
        ).pow(2)
    else:
        mags = torch.cat([p.detach().abs().flatten() for p in params])
    ctl = _controller(cfg, mags, ramp)

    def after_step(model: torch.nn.Module) -> None:
        sparsity = global_sparsity(params)
        ctl.update(sparsity)
        if sparsity > ctl.wanted() + OVERSHOOT:
            return  # ahead of schedule: no shrink this step (prevents runaway pruning)
        step = optimizer.param_groups[0]["lr"] * ctl.lam
        with torch.no_grad():
            for p in params:
                if cfg.reweighted:
                    p.copy_(weighted_soft_threshold(p, reweighted_steps(p, step)))
                else:
                    p.copy_(soft_threshold(p, step))

    ctx.fit(optimizer, cfg.epochs, "prox", after_step=after_step)
    reached = global_sparsity(params)
    masks = topk_masks(
        {n: p.detach().abs() for n, p in ctx.params.items()}, cfg.sparsity, cfg.scope.value
    )
    apply_masks(ctx.params, masks)
    logger.info(
        "prox reached sparsity %.4f (lam %.3g), projected to %.4f", reached, ctl.lam, cfg.sparsity
    )
    return PruneOutcome(
        masks, cfg.finetune_epochs, {"prox_sparsity": reached, "final_lam": ctl.lam}
    )


def _controller(cfg, magnitudes: torch.Tensor, ramp: int) -> LamController:
    """lam0 given, or chosen so that a constant shrink of ``lr * lam`` per step would zero the
    target quantile of the magnitudes by the end of the ramp (gradients aside)."""
    lam0 = cfg.lam0
    if lam0 is None:
        q = _quantile(magnitudes.float(), cfg.sparsity)
        lam0 = max(q / (cfg.lr * ramp), 1e-6)
    return LamController(cfg.sparsity, lam0, ramp)


def _quantile(t: torch.Tensor, q: float) -> float:
    if t.numel() == 0:
        return 0.0
    k = min(t.numel(), max(1, int(round(q * t.numel()))))
    return float(t.kthvalue(k).values)


def _structured(ctx: PruneContext, optimizer, ctl: LamController, groups) -> PruneOutcome:
    cfg = ctx.cfg

    def after_step(model: torch.nn.Module) -> None:
        sparsity = channel_sparsity(groups)
        ctl.update(sparsity)
        if sparsity <= ctl.wanted() + OVERSHOOT:
            group_prox(groups, optimizer.param_groups[0]["lr"] * ctl.lam)

    ctx.fit(optimizer, cfg.epochs, "prox-group", after_step=after_step)
    reached = channel_sparsity(groups)
    keep = channel_keep_masks(groups, cfg.sparsity, cfg.scope.value)
    zero_channels(groups, keep)
    total = sum(int(k.numel()) for k in keep.values())
    kept = sum(int(k.sum()) for k in keep.values())
    removed = remove_channels(ctx.model, ctx.input_shape, groups, keep)
    logger.info("group prox reached channel sparsity %.4f; removed %d channels", reached, removed)
    notes = {
        "prox_channel_sparsity": reached,
        "final_lam": ctl.lam,
        "channels": total,
        "channels_kept": kept,
        "channels_removed": removed,
        "channel_sparsity": 1 - kept / total if total else 0.0,
        "channel_masks": {n: k.cpu() for n, k in keep.items()},
    }
    return PruneOutcome(None, cfg.finetune_epochs, notes)
