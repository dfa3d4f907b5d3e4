"""Paper 1's method: robust KD training with a proximal step after every optimizer step.

Unstructured, by ``penalty``: reweighted L1 (default) or L1 soft threshold with step
``lr * lam``; or ``l0``, the prox of the L0-ball indicator (top-k projection, i.e. iterative
hard thresholding) with k on a cubic ramp. How lam is set (:class:`Lam`, ``lam_schedule``):
``ball`` (default) keeps lam fixed and small and adds the L0-ball of the ramp to the penalty, so
the prox is the soft threshold followed by the top-k projection onto ``s(t)`` (the exact prox
of ``lam * L1 + indicator(||w||_0 <= k(t))``, the order of magnitudes being kept); ``track``
sets lam each step so that the threshold alone zeroes ``s(t)`` (shrinks every survivor by that
threshold each step: at high sparsity the survivors decay and accuracy collapses, kept for
comparison); ``feedback`` steers lam multiplicatively. A final exact top-k projection lands
on the target.
Structured: group soft threshold over output channels (with coupled BN affine parameters,
see :mod:`robustedge.compress.structured`), exact top-k over channels, then physical removal
of the zero channels with Torch-Pruning. The masked (or shrunk) fine-tune follows in the
pipeline. The prox keeps no state beyond the weights, except with ``lazy_prox``.

Options (docs/compression-diagnosis.md measures them): the ramp runs from ``ramp_start`` to
``ramp_end`` (shares of the pruning phase; dense robust training before it). ``lazy_prox``
(ball / l0 schedules): the prox is applied to a dense iterate and the model trains at its
projection; the residual (what the projection removed) is kept as one weight-sized tensor and
added back before the next prox, so a pruned weight whose gradients keep pushing it comes back
(lazy projection / dual averaging, Nesterov 2009; Xiao 2010). Without it a pruned weight is
exactly zero after every step, moves by about one learning rate, and the next projection
zeroes it again: the mask is committed greedily. ``kd_target="clean"``: the teacher answers
on the clean batch (robust soft labels, ARD / RSLAD) instead of the student's adversarial
example, here and in the pipeline's fine-tune (:class:`~robustedge.compress.distill.KDTaskLoss`).
``admm_warm`` (with ``ramp_start`` > 0): the dense warm start carries ADMM's pull towards the
target's top-k (:class:`~robustedge.compress.method_admm.ADMMWarmStart`), so the ramp starts
from ADMM's per-layer budget; ``prox_pull``: see :func:`_pull_hooks`. ``layer_budget``
(``fisher`` / ``taylor``): each layer's share of the kept weights is searched once when the ramp
starts (:mod:`robustedge.compress.saliency`) and every projection keeps it; ``harp``: learned
by HARP's rate phase before prox trains (:mod:`robustedge.compress.learned_budget`). The lam
schedules live in :mod:`robustedge.compress.schedule`.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Optional

import torch

from robustedge.compress import learned_budget, saliency
from robustedge.compress.common import PruneContext, PruneOutcome, make_optimizer
from robustedge.compress.config import CompressConfig, MethodOptions, positive, register_method
from robustedge.compress.distill import KDTaskLoss, RememberClean
from robustedge.compress.method_admm import RHO_HELP, AdmmOptions, ADMMWarmStart
from robustedge.compress.prox import (
    REL_EPS,
    reweighted_steps,
    soft_threshold,
    topk_masks,
    weighted_soft_threshold,
)
from robustedge.compress.schedule import Lam, cubic_ramp
from robustedge.compress.structured import (
    channel_groups,
    channel_keep_masks,
    channel_sparsity,
    group_prox,
    remove_channels,
    zero_channels,
)
from robustedge.compress.targets import apply_masks, global_sparsity
from robustedge.config import FieldError, default_of, setting

logger = logging.getLogger(__name__)


class Penalty(str, enum.Enum):
    """prox's penalty: reweighted L1, L1 (soft threshold) or L0 (top-k projection)."""

    REWEIGHTED = "reweighted"
    L1 = "l1"
    L0 = "l0"


class LayerBudget(str, enum.Enum):
    """How prox shares the target's weights among layers (see ``ProxOptions.layer_budget``)."""

    RANKED = "ranked"
    FISHER = "fisher"
    TAYLOR = "taylor"
    HARP = "harp"


class LamSchedule(str, enum.Enum):
    """How prox sets lam (see :class:`Lam`)."""

    BALL = "ball"
    TRACK = "track"
    FEEDBACK = "feedback"


@dataclass(frozen=True)
class ProxOptions(MethodOptions):
    """prox's penalty, lam schedule, sparsity ramp, lazy prox and ADMM warm start."""

    penalty: Penalty = setting(
        Penalty.L0,
        help="Reweighted L1, L1 (soft threshold) or L0 (top-k projection every step).",
    )
    lam_schedule: LamSchedule = setting(
        LamSchedule.BALL,
        help="Small fixed lam plus top-k projection onto the ramp's sparsity (ball); lam set "
        "each step so the threshold alone zeroes the ramp's sparsity (track; collapses at high "
        "sparsity); or lam steered multiplicatively from --lam0 (feedback).",
    )
    lam0: Optional[float] = setting(
        None, help="lam for --lam-schedule ball / initial lam for feedback [default: automatic]."
    )
    ramp_start: float = setting(
        0.0, help="Share of the pruning phase trained dense before the sparsity ramp."
    )
    ramp_end: float = setting(
        0.75, help="Share of the pruning phase at which the ramp reaches the target."
    )
    lazy_prox: bool = setting(
        True,
        help="Project a dense iterate kept beside the weights (dual averaging), so pruned "
        "weights can come back; one weight-sized tensor of extra state.",
    )
    prox_pull: float = setting(
        0.0, help="Lazy prox: L2 pull (rho) of the pruned part of the dense iterate to 0 (0: off)."
    )
    admm_warm: bool = setting(
        False,
        cli="--admm-warm/--no-admm-warm",
        help="ADMM's pull towards the target's top-k (--admm-rho, growing as in --method admm) "
        "during the dense warm start (needs --ramp-start > 0): the layer budgets become ADMM's, "
        "the training stays prox's. Two more weight-sized tensors (Z, U) in the phase.",
    )
    admm_rho: float = setting(default_of(AdmmOptions, "admm_rho"), help=RHO_HELP)
    layer_budget: LayerBudget = setting(
        LayerBudget.RANKED,
        help="Each layer's share of the kept weights: what the --scope ranking of the iterate "
        "gives at every projection (ranked), or fixed when the ramp starts by a robust saliency "
        "search on 512 PGD-attacked training images, pruned in 8 rounds (fisher: OBD's "
        "E[g^2] w^2 / 2; taylor: |E[g] w|). Not the default: on LeNet-5 fisher was within the "
        "seed spread of ranked or ahead, but on ResNet-8 at sparsity 0.99 it was behind ranked "
        "on both seeds run (docs/compression-diagnosis.md section 10). harp: learned by "
        "HARP's rate phase (--budget-epochs, weights frozen) before prox trains; not the "
        "default either: behind ranked on digits, within the seed spread of it and of HARP on "
        "ResNet-8 (docs/robust-methods.md).",
    )
    budget_epochs: int = setting(
        0,
        help="--layer-budget harp: epochs of HARP's rate phase before prox (0: --epochs, "
        "HARP's own length).",
    )

    def __post_init__(self) -> None:
        for key, cls in (
            ("penalty", Penalty),
            ("lam_schedule", LamSchedule),
            ("layer_budget", LayerBudget),
        ):
            try:
                object.__setattr__(self, key, cls(getattr(self, key)))
            except ValueError:
                known = ", ".join(m.value for m in cls)
                raise FieldError(
                    key, f"{key} must be one of {known}, got '{getattr(self, key)}'"
                ) from None
        if not (0.0 <= self.ramp_start < self.ramp_end <= 1.0):
            raise FieldError(
                "ramp_end" if self.ramp_start < self.ramp_end else "ramp_start",
                f"need 0 <= ramp_start < ramp_end <= 1, got {self.ramp_start}, {self.ramp_end}",
            )
        if self.prox_pull < 0:
            raise FieldError("prox_pull", f"prox_pull must be >= 0 (0: off), got {self.prox_pull}")
        if self.lam0 is not None and not (self.lam0 > 0):
            raise FieldError("lam0", f"lam0 must be > 0, got {self.lam0}")
        positive(self, "admm_rho")
        if self.budget_epochs < 0:
            raise FieldError(
                "budget_epochs", f"budget_epochs must be >= 0, got {self.budget_epochs}"
            )

    def check(self, cfg: CompressConfig) -> None:
        if self.admm_warm and (self.ramp_start <= 0 or cfg.structured):
            raise FieldError("admm_warm", "admm_warm needs ramp_start > 0 and unstructured pruning")
        if self.layer_budget is not LayerBudget.RANKED and (
            cfg.structured or cfg.scope.value != "global"
        ):
            raise FieldError(
                "layer_budget",
                "a searched layer_budget sets each layer's share itself: it needs unstructured "
                "pruning and scope global",
            )
        if self.layer_budget is LayerBudget.HARP and cfg.awp_gamma > 0:
            raise FieldError(
                "layer_budget",
                "layer_budget harp trains no weights in its rate phase: no awp_gamma",
            )

    def unused(self) -> FrozenSet[str]:
        out = set() if self.admm_warm else {"admm_rho"}
        if self.layer_budget is not LayerBudget.HARP:
            out.add("budget_epochs")
        return frozenset(out)


@register_method("prox", options=ProxOptions, structured=True, defaults={"kd_alpha": 0.5})
def prox_prune(ctx: PruneContext) -> PruneOutcome:
    """Prox phase for ``cfg.epochs``, then the exact projection (and removal if structured)."""
    cfg = ctx.cfg
    opts: ProxOptions = cfg.options  # type: ignore[assignment]
    if cfg.kd_target != "adv" and not isinstance(ctx.adversary, RememberClean):
        if isinstance(ctx.task_loss, KDTaskLoss):  # a context built outside the pipeline
            ctx.task_loss.target = cfg.kd_target.value
            ctx.adversary = RememberClean(ctx.adversary, ctx.task_loss)
    learned = _learned_budgets(ctx, opts)
    optimizer = make_optimizer(ctx.model.parameters(), cfg)
    start, ramp = ramp_window(cfg, ctx.steps_per_epoch)
    if cfg.structured:
        return _structured(ctx, optimizer, ramp, start)
    params = ctx.params
    step = ProxStep(cfg, params, optimizer, start, ramp)
    lam, clock, residual = step.lam, step.clock, step.residual
    ctx.keep_state("prox", lambda: lam.state(clock), lambda s: lam.load(s, clock))
    if opts.layer_budget is LayerBudget.HARP:  # learned before (or restored on resume)
        if learned is not None:
            step.budgets, step.report = learned
        ctx.keep_state("prox_budgets", step.budget_state, step.load_budgets)
    elif opts.layer_budget is not LayerBudget.RANKED:  # searched when the ramp starts
        step.search = lambda model: saliency.search(
            model,
            params,
            ctx.batches(0),
            ctx.device,
            cfg.sparsity,
            _probe_eps(cfg),
            cfg.steps,
            opts.layer_budget.value,
        )
        ctx.keep_state("prox_budgets", step.budget_state, step.load_budgets)
    warm = (
        ADMMWarmStart(ctx, start, start // ctx.steps_per_epoch, clock) if opts.admm_warm else None
    )
    hooks = _pull_hooks(params, residual, opts.prox_pull)
    try:
        ctx.fit(
            optimizer,
            cfg.epochs,
            "prox",
            after_step=step,
            task_loss=warm.task_loss(ctx.task_loss) if warm is not None else None,
            method_state=lambda: list(residual.values()) + (warm.tensors() if warm else []),
            epoch_hook=warm.epoch_end if warm is not None else None,
        )
    finally:
        for h in hooks:
            h.remove()
    reached = global_sparsity(params.values())
    if residual:  # the final projection is of the dense iterate
        with torch.no_grad():
            for n, p in params.items():
                p.add_(residual[n])
    masks = step.masks(cfg.sparsity)
    apply_masks(params, masks)
    logger.info("prox reached sparsity %.4f (lam %.3g), projected", reached, lam.lam)
    notes: Dict[str, object] = {
        "prox_sparsity": reached,
        "final_lam": lam.lam,
        "layer_budget": opts.layer_budget.value,
    }
    if step.budgets is not None:
        notes["layer_budgets"] = dict(step.budgets)
        notes["sensitivity"] = step.report
    return PruneOutcome(masks, cfg.finetune_epochs, notes)


def _learned_budgets(ctx: PruneContext, opts: ProxOptions):
    """``layer_budget harp``: HARP's rate phase, run first (not when resuming into prox's own
    phase, whose checkpoint holds the budgets); None for the other budgets."""
    if opts.layer_budget is not LayerBudget.HARP:
        return None
    if ctx.resume is not None and ctx.resume.get("phase") == "prox":
        return None  # prox's checkpoint restores them (keep_state "prox_budgets")
    return learned_budget.learned_budgets(ctx, opts.budget_epochs or ctx.cfg.epochs)


def _probe_eps(cfg: CompressConfig) -> float:
    """The saliency probe attacks at the training eps (clean losses without an adversary)."""
    return 0.0 if cfg.adversary == "none" else float(cfg.eps)


class ProxStep:
    """prox's step on the unstructured weights, called after every optimizer step: dense
    until ``start`` (the warm start), then the penalty's prox (and the L0-ball projection onto
    the ramp's sparsity). With ``lazy_prox`` it works on the dense iterate: ``residual`` (what
    the last projection removed) is added back first."""

    def __init__(self, cfg: CompressConfig, params, optimizer, start: int, ramp: int) -> None:
        self.cfg, self.opts = cfg, cfg.options
        self.params, self.optimizer, self.start, self.ramp = params, optimizer, start, ramp
        self.lam = Lam(cfg, ramp)
        self.clock = {"t": 0}
        # lazy prox: residual = dense iterate minus its projection (what the projection removed)
        lazy = self.opts.lazy_prox
        self.residual = {n: torch.zeros_like(p) for n, p in params.items()} if lazy else {}
        # a searched layer_budget: search(model) -> (per-layer sparsities, report), run once
        # when the ramp starts; the projections then keep those shares
        self.search: Optional[Callable] = None
        self.budgets: Optional[Dict[str, float]] = None
        self.report: Dict[str, object] = {}

    def budget_state(self) -> Optional[Dict[str, object]]:
        return None if self.budgets is None else {"budgets": self.budgets, "report": self.report}

    def load_budgets(self, state: Optional[Dict[str, object]]) -> None:
        if state is not None:
            self.budgets, self.report = state["budgets"], state["report"]  # type: ignore

    def masks(self, wanted: float) -> Dict[str, torch.Tensor]:
        """Top-k masks of the weights at sparsity ``wanted``: per layer at the searched
        budgets' shares when there are some, else ranked by ``scope``."""
        scores = {n: p.detach().abs() for n, p in self.params.items()}
        if self.budgets is not None:
            share = wanted / self.cfg.sparsity if self.cfg.sparsity > 0 else 0.0
            return saliency.budget_masks(scores, self.budgets, share)
        return topk_masks(scores, wanted, self.cfg.scope.value)

    def project(self, wanted: float) -> None:
        """Top-k projection onto sparsity ``wanted`` (the residual keeps what it removed)."""
        params, residual = self.params, self.residual
        masks = self.masks(wanted)
        if residual:
            with torch.no_grad():
                for n, p in params.items():
                    residual[n].copy_(p * ~masks[n])
        apply_masks(params, masks)

    def __call__(self, model: torch.nn.Module) -> None:
        params, residual, opts, lam = self.params, self.residual, self.opts, self.lam
        self.clock["t"] += 1
        if self.clock["t"] <= self.start:  # warm start: dense robust training before the ramp
            return
        if residual:  # back to the dense iterate: the step moved the projection by its update
            with torch.no_grad():
                for n, p in params.items():
                    p.add_(residual[n])
        if self.search is not None and self.budgets is None:  # the ramp starts: search once
            self.budgets, self.report = self.search(model)
            logger.info("prox layer budgets (%s search): %s", self.report["saliency"], self.budgets)
        if opts.penalty == "l0":  # prox of the L0-ball indicator: top-k projection on the ramp
            lam.t += 1
            self.project(cubic_ramp(lam.t, self.ramp, self.cfg.sparsity))
            return
        u = {n: zero_scores(p, opts.penalty == "reweighted") for n, p in params.items()}
        step = lam.next_step(u, global_sparsity(params.values()), self.optimizer)
        if step is None:
            return
        with torch.no_grad():
            for n, p in params.items():
                st = step[n] if isinstance(step, dict) else step
                if opts.penalty == "reweighted":
                    p.copy_(weighted_soft_threshold(p, reweighted_steps(p, st)))
                else:
                    p.copy_(soft_threshold(p, st))
        if opts.lam_schedule == "ball":  # L0-ball part of the prox: top-k onto the ramp
            self.project(cubic_ramp(lam.t, self.ramp, self.cfg.sparsity))
        elif residual:
            self.project(0.0)


def _pull_hooks(params, residual, rho: float):
    """Lazy prox with ``prox_pull``: the loss gains ``rho/2 ||W - P(W)||^2`` (the dense
    iterate's pruned part pulled to zero, as ADMM pulls W to Z), so a pruned weight comes back
    only while its loss gradient outweighs the pull. Meant to rank pruned weights by the size
    of their gradients like ADMM; measured, it did not move the per-layer budgets
    (docs/compression-diagnosis.md section 7). Off by default."""
    if not (residual and rho > 0):
        return []
    return [p.register_hook(lambda g, r=residual[n]: g + rho * r) for n, p in params.items()]


def ramp_window(cfg: CompressConfig, steps_per_epoch: int):
    """(start, length) in optimizer steps of the sparsity ramp: it begins after
    ``ramp_start`` and reaches the target at ``ramp_end`` (fractions of the pruning phase)."""
    total = cfg.epochs * steps_per_epoch
    start = int(cfg.options.ramp_start * total)
    return start, max(1, int(cfg.options.ramp_end * total) - start)


def zero_scores(p: torch.Tensor, reweighted: bool) -> torch.Tensor:
    """``u`` with: the prox with step ``lr * lam`` zeroes exactly the weights with
    ``u <= lr * lam`` (|w| for L1; |w| (|w| + eps s) / s^2 for the reweighted L1)."""
    a = p.detach().abs()
    if not reweighted:
        return a
    s = a.mean().clamp_min(1e-12)
    return a * (a + REL_EPS * s) / (s * s)


def ramped(cfg: CompressConfig, now: float) -> Dict[str, float]:
    """``cfg.layer_sparsity`` scaled onto the ramp: each layer's fraction times ``now /
    sparsity`` (its own fraction when the ramp ends)."""
    share = now / cfg.sparsity if cfg.sparsity > 0 else 1.0
    return {n: f * share for n, f in cfg.layer_sparsity.items()}


def _structured(ctx: PruneContext, optimizer, ramp: int, start: int = 0) -> PruneOutcome:
    cfg = ctx.cfg
    groups = channel_groups(ctx.model, ctx.input_shape, cfg.include_first, cfg.include_last)
    lam = Lam(cfg, ramp)
    clock = {"t": 0}
    ctx.keep_state("prox", lambda: lam.state(clock), lambda s: lam.load(s, clock))

    def after_step(model: torch.nn.Module) -> None:
        clock["t"] += 1
        if clock["t"] <= start:  # warm start: dense robust training before the ramp
            return
        # a channel is zeroed iff its RMS <= lr * lam; each layer keeps its strongest channel
        rms = {g.root: (g.sq_norms() / g.size_per_channel()).sqrt() for g in groups}
        step = lam.next_step(rms, channel_sparsity(groups), optimizer)
        if step is None:
            return
        for g in groups:
            st = step[g.root] if isinstance(step, dict) else step
            group_prox([g], min(st, 0.5 * float(rms[g.root].max())))
        if cfg.options.lam_schedule == "ball":  # group L0-ball: top-k channels onto the ramp
            now = cubic_ramp(lam.t, ramp, cfg.sparsity)
            zero_channels(
                groups,
                channel_keep_masks(groups, now, cfg.scope.value, per_layer=ramped(cfg, now)),
            )

    ctx.fit(optimizer, cfg.epochs, "prox-group", after_step=after_step)
    reached = channel_sparsity(groups)
    keep = channel_keep_masks(groups, cfg.sparsity, cfg.scope.value, per_layer=cfg.layer_sparsity)
    zero_channels(groups, keep)
    total = sum(int(k.numel()) for k in keep.values())
    kept = sum(int(k.sum()) for k in keep.values())
    removed = remove_channels(ctx.model, ctx.input_shape, groups, keep)
    logger.info("group prox reached channel sparsity %.4f; removed %d channels", reached, removed)
    notes = {
        "prox_channel_sparsity": reached,
        "final_lam": lam.lam,
        "channels": total,
        "channels_kept": kept,
        "channels_removed": removed,
        "channel_sparsity": 1 - kept / total if total else 0.0,
        "channel_masks": {n: k.cpu() for n, k in keep.items()},
    }
    return PruneOutcome(None, cfg.finetune_epochs, notes)
