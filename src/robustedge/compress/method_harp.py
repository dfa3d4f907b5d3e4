"""HARP (Zhao & Wressnegger, ICLR 2023, "Holistic Adversarially Robust Pruning"): learn how
much to prune in each layer together with which weights to keep, under the robust loss.

Every prunable layer ``l`` gets importance scores ``s_l`` (weight-sized; one per output channel
with ``--structured``), initialised to HYDRA's scaled magnitude, and one rate parameter ``r_l``.
Its kept fraction is ``k_l = sigmoid(r_l) (1 - k_min) + k_min`` with ``k_min = alpha * k`` (``k``
the target's kept fraction), started from the uniform strategy ``rate_init`` (the paper's
``010_uni``) by the inverse map. The forward pass uses ``W * m_l``, where ``m_l`` keeps the top
``numel - int((1 - k_l) numel)`` entries of ``|s_l|`` (``max(1, round(k_l C))`` channels
structured). The mask is straight-through in both inputs: the scores get the mask's gradient
``g``, the rate gets ``sum(g)``. With the weights frozen, scores and rates are trained on

    L = L_robust + gamma_t * max(c(k) / c_target - 1, 0)

where ``c`` is the kept fraction of prunable weights (``sum n_l k_l / sum n_l``), or, structured,
of the prunable layers' MACs (``sum D_l k_in(l) k_out(l) / sum D_l``, the target being the
uniform student's); ``gamma_t = (t + 1) gamma`` after epoch ``t`` until the rate loss is 0 at an
epoch end, then frozen (the paper's step-wise dynamic weight). BatchNorm affine parameters keep
training, as in the reference code.

The learned rates become the student: unstructured, exactly the target's number of weights is
allocated over the layers in proportion to ``k_l n_l`` (largest remainder), each layer keeping
its top scores; structured, the rates are scaled down by one common factor until the student's
MACs are within the target's, and the channels are removed physically. The pipeline's masked
fine-tune follows. ``--scope`` does not apply (the spread is learned).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from robustedge.compress.common import PruneContext, PruneOutcome, make_optimizer
from robustedge.compress.config import FieldError, MethodOptions, positive, register_method
from robustedge.compress.prox import keep_count, topk_mask
from robustedge.compress.structured import ChannelGroup, channel_groups, shrink
from robustedge.compress.targets import apply_masks, prunable_params
from robustedge.config import setting

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HarpOptions(MethodOptions):
    """HARP's own settings (defaults: the reference code's, Adam's rate step scaled down)."""

    score_lr: float = setting(0.01, help="Learning rate of HYDRA's importance scores.")
    rate_lr: float = setting(0.01, help="HARP: learning rate of the per-layer rate parameters.")
    rate_gamma: float = setting(
        0.01,
        help="HARP: weight of the compression-rate loss, grown by this much per epoch until the "
        "rate is met, then frozen.",
    )
    rate_alpha: float = setting(
        0.1, help="HARP: lowest kept fraction of a layer, as a share of the target's."
    )
    rate_init: float = setting(
        0.1,
        help="HARP: kept fraction every layer starts from (the paper's uniform strategy); at "
        "least the target's.",
    )

    def check(self, cfg: Any) -> None:
        if cfg.layer_sparsity:
            raise FieldError("layer_sparsity", "HARP learns each layer's rate: no layer_sparsity")

    def __post_init__(self) -> None:
        positive(self, "score_lr", "rate_lr", "rate_gamma")
        for name in ("rate_alpha", "rate_init"):
            if not (0.0 < getattr(self, name) <= 1.0):
                raise FieldError(name, f"{name} must lie in (0, 1], got {getattr(self, name)}")


def rate_of(r: torch.Tensor, k_min: float) -> torch.Tensor:
    """Kept fraction of rate parameter ``r``: ``sigmoid(r) (1 - k_min) + k_min``."""
    return torch.sigmoid(r) * (1.0 - k_min) + k_min


def rate_param(k: float, k_min: float) -> float:
    """Inverse of :func:`rate_of` (``k`` clipped into the open range the sigmoid reaches)."""
    u = min(max((k - k_min) / (1.0 - k_min), 0.01), 0.99)
    return math.log(u / (1.0 - u))


def kept_entries(numel: int, k: float) -> int:
    """Entries a layer of ``numel`` keeps at kept fraction ``k`` (the reference code's rule)."""
    return numel - int((1.0 - k) * numel)


def kept_channels(channels: int, k: float) -> int:
    """Channels a group keeps at kept fraction ``k`` (at least one)."""
    return max(1, min(channels, int(round(k * channels))))


class _RateMask(torch.autograd.Function):
    """Forward: the given 0/1 mask; backward: its gradient ``g`` to the scores and ``sum(g)``
    to the kept fraction (HARP's straight-through estimator)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, rate: torch.Tensor, mask: torch.Tensor):
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, grad.sum(), None


def score_mask(scores: torch.Tensor, rate: torch.Tensor, structured: bool) -> torch.Tensor:
    """The 0/1 mask of ``|scores|`` at kept fraction ``rate`` (a 0-dim tensor), differentiable
    in both by :class:`_RateMask`."""
    a = scores.abs()
    k = float(rate.detach())
    n = kept_channels(a.numel(), k) if structured else kept_entries(a.numel(), k)
    return _RateMask.apply(a, rate, topk_mask(a.detach(), n))


class HarpState(nn.Module):
    """Scores and rate parameters of all prunable layers (groups when structured) and the
    compression-rate term: ``sizes[l]`` weights each (unstructured) or ``macs`` terms
    ``(D, in group, out group)`` (structured)."""

    def __init__(
        self,
        scores: Sequence[torch.Tensor],
        sparsity: float,
        opts: HarpOptions,
        structured: bool = False,
        macs: Sequence[Tuple[float, Optional[int], Optional[int]]] = (),
    ) -> None:
        super().__init__()
        self.structured, self.sparsity, self.target = structured, sparsity, 1.0 - sparsity
        self.k_min = opts.rate_alpha * self.target
        self.scores = nn.ParameterList(nn.Parameter(s.detach().clone()) for s in scores)
        init = rate_param(max(opts.rate_init, self.target), self.k_min)
        self.r = nn.Parameter(torch.full((len(self.scores),), init))
        self.sizes = [s.numel() for s in self.scores]
        self.macs = list(macs)

    def rates(self) -> torch.Tensor:
        return rate_of(self.r, self.k_min)

    def mask(self, i: int) -> torch.Tensor:
        return score_mask(self.scores[i], self.rates()[i], self.structured)

    def kept(self, k: torch.Tensor) -> torch.Tensor:
        """Kept fraction of weights (or MACs, structured) at per-layer fractions ``k``."""
        if not self.structured:
            n = torch.tensor(self.sizes, dtype=k.dtype, device=k.device)
            return (n * k).sum() / n.sum()
        one = k.new_ones(())
        total = sum(d for d, _, _ in self.macs)
        kept = sum(
            d * (one if i is None else k[i]) * (one if o is None else k[o]) for d, i, o in self.macs
        )
        return kept / total

    def target_kept(self) -> float:
        """The kept fraction the rate term aims at: ``1 - sparsity`` of the weights, or the
        MACs of the student with that fraction of every group's channels kept."""
        if not self.structured:
            return self.target
        k = [max(1, keep_count(n, self.sparsity)) / n for n in self.sizes]
        return float(self.kept(torch.tensor(k, dtype=torch.float64)))

    def rate_loss(self) -> torch.Tensor:
        """``max(c(k) / c_target - 1, 0)``: HARP's compression-rate term."""
        return torch.relu(self.kept(self.rates()) / self.target_kept() - 1.0)


class _Masked(nn.Module):
    """Parametrization ``p -> p * mask`` for one parameter: the layer's weight mask, or
    (structured) channel ``j``'s factor at rows ``index`` of a coupled slice."""

    def __init__(self, state: HarpState, i: int, index: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.i, self.index = i, index
        object.__setattr__(self, "state", state)  # not a submodule (no duplicate params)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        m = self.state.mask(self.i)
        if self.index is None:
            return p * m
        full = torch.ones(p.shape[0], dtype=p.dtype, device=p.device).index_put(
            (self.index,), m.to(p.dtype)
        )
        return p * full.view(-1, *([1] * (p.dim() - 1)))


class DynamicGamma:
    """The paper's step-wise weight of the rate term: ``(t + 1) gamma`` in epoch ``t`` until an
    epoch ends with the rate met (the loss rounded to 4 decimals is 0), then frozen."""

    def __init__(self, gamma: float) -> None:
        self.gamma, self.epochs, self.frozen = gamma, 0, None

    def __call__(self) -> float:
        return self.frozen if self.frozen is not None else (self.epochs + 1) * self.gamma

    def epoch_end(self, rate_loss: float) -> None:
        if self.frozen is None and round(rate_loss, 4) == 0.0:
            self.frozen = self()
        self.epochs += 1

    def get(self) -> Dict[str, Any]:
        return {"epochs": self.epochs, "frozen": self.frozen}

    def put(self, state: Dict[str, Any]) -> None:
        self.epochs, self.frozen = int(state["epochs"]), state["frozen"]


def allocate(weights: Sequence[float], caps: Sequence[int], total: int) -> List[int]:
    """Integer counts proportional to ``weights``, each at most its cap, summing to ``total``
    (largest remainder; the share above a cap goes to the others)."""
    if total > sum(caps):
        raise ValueError(f"cannot keep {total} of {sum(caps)}")
    counts, free, left = [0] * len(caps), set(range(len(caps))), total
    while free:
        w = sum(weights[i] for i in free)
        share = {i: left * (weights[i] / w if w > 0 else 1.0 / len(free)) for i in free}
        capped = [i for i in free if share[i] >= caps[i]]
        if not capped:
            for i in free:
                counts[i] = int(math.floor(share[i]))
            rest = left - sum(counts[i] for i in free)
            for i in sorted(free, key=lambda j: (-(share[j] - counts[j]), j))[:rest]:
                counts[i] += 1
            break
        for i in capped:
            counts[i], left = caps[i], left - caps[i]
            free.discard(i)
    return counts


def layer_macs(model: nn.Module, input_shape: Tuple[int, int, int]) -> Dict[nn.Module, int]:
    """Dense MACs of every Conv2d / Linear for one input (the count of
    :func:`robustedge.models.count_macs`, per layer)."""
    out: Dict[nn.Module, int] = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, _, y: out.__setitem__(mod, int(y[0].numel() * mod.weight[0].numel()))
        )
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return out


def macs_terms(
    model: nn.Module, input_shape: Tuple[int, int, int], groups: Sequence[ChannelGroup]
) -> List[Tuple[float, Optional[int], Optional[int]]]:
    """Per Conv2d / Linear: ``(dense MACs, group of its input channels, group of its output
    channels)`` (None: not pruned), from Torch-Pruning's dependency graph."""
    import torch_pruning as tp

    device = next(model.parameters()).device
    dg = tp.DependencyGraph().build_dependency(
        model, example_inputs=torch.zeros(1, *input_shape, device=device)
    )
    outs, ins = {}, {}
    for gi, g in enumerate(groups):
        fn = tp.prune_conv_out_channels if isinstance(g.module, nn.Conv2d) else None
        group = dg.get_pruning_group(g.module, fn or tp.prune_linear_out_channels, idxs=[0])
        for dep, _ in group:
            mod = dep.target.module
            if dg.is_out_channel_pruning_fn(dep.handler):
                outs.setdefault(mod, gi)
            elif dg.is_in_channel_pruning_fn(dep.handler):
                ins.setdefault(mod, gi)
    return [(float(d), ins.get(m), outs.get(m)) for m, d in layer_macs(model, input_shape).items()]


def _owner(model: nn.Module, p: torch.Tensor) -> Tuple[nn.Module, str]:
    for mod in model.modules():
        for name, q in mod.named_parameters(recurse=False):
            if q is p:
                return mod, name
    raise ValueError("parameter not found in the model")


def _scaled_magnitude(w: torch.Tensor) -> torch.Tensor:
    """HYDRA's / HARP's score init: ``sqrt(6 / fan_in) * w / max |w|``."""
    fan_in = w[0].numel() if w.dim() > 1 else 1
    return math.sqrt(6.0 / fan_in) * w / w.abs().max().clamp_min(1e-12)


def build_state(
    ctx: PruneContext, opts: Optional[HarpOptions] = None
) -> Tuple[HarpState, List[Tuple[nn.Module, str, nn.Module]]]:
    """The scores and rates and the parametrizations to register: ``(module, param name,
    parametrization)``. ``opts``: HARP's settings (default: the run's method options)."""
    cfg = ctx.cfg
    opts = opts or cfg.options  # type: ignore[assignment]
    if not cfg.structured:
        scores = [_scaled_magnitude(p.detach()) for p in ctx.params.values()]
        state = HarpState(scores, cfg.sparsity, opts).to(ctx.device)
        plan = [
            (*_owner(ctx.model, p), _Masked(state, i)) for i, p in enumerate(ctx.params.values())
        ]
        return state, plan
    groups = channel_groups(ctx.model, ctx.input_shape, cfg.include_first, cfg.include_last)
    scores = [_scaled_magnitude(g.l1_norms()) for g in groups]
    terms = macs_terms(ctx.model, ctx.input_shape, groups)
    state = HarpState(scores, cfg.sparsity, opts, True, terms).to(ctx.device)
    plan = [
        (*_owner(ctx.model, p), _Masked(state, i, idx))
        for i, g in enumerate(groups)
        for p, idx in g.slices
    ]
    return state, plan


def train_rates(
    ctx: PruneContext,
    state: HarpState,
    plan,
    opts: Optional[HarpOptions] = None,
    epochs: Optional[int] = None,
    phase: str = "harp",
) -> Dict[str, Any]:
    """HARP's pruning phase: scores and rates trained on the robust loss plus the rate term,
    weights frozen (BatchNorm's affine parameters keep training), for ``epochs`` (default
    ``cfg.epochs``) as checkpoint phase ``phase``. Returns its record: per epoch the rate
    term's weight and value, the kept fraction and the learned per-layer kept fractions."""
    cfg = ctx.cfg
    opts = opts or cfg.options  # type: ignore[assignment]
    frozen = [(p, p.requires_grad) for p in ctx.model.parameters()]
    for mod in ctx.model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            for p in mod.parameters(recurse=False):
                p.requires_grad_(False)
    bn = [p for p, _ in frozen if p.requires_grad]
    for mod, name, masked in plan:
        parametrize.register_parametrization(mod, name, masked)
    groups = [
        {"params": list(state.scores), "lr": opts.score_lr},
        {"params": [state.r], "lr": opts.rate_lr},
    ] + ([{"params": bn, "lr": cfg.lr}] if bn else [])
    optimizer = make_optimizer(groups, cfg)
    gamma = DynamicGamma(opts.rate_gamma)
    log: List[Dict[str, Any]] = []

    def put(saved: Dict[str, Any]) -> None:  # the record of the epochs before a resume too
        gamma.put(saved)
        log[:] = saved.get("log", [])

    ctx.keep_state(f"{phase}_gamma", lambda: {**gamma.get(), "log": list(log)}, put)

    def epoch_hook(record: Dict[str, Any]) -> None:
        with torch.no_grad():
            loss, kept = float(state.rate_loss()), float(state.kept(state.rates()))
            rates = [round(float(k), 6) for k in state.rates()]
        record.update(harp_gamma=gamma(), harp_rate_loss=loss, harp_kept=kept)
        log.append({"gamma": gamma(), "rate_loss": loss, "kept": kept, "rates": rates})
        gamma.epoch_end(loss)

    base = ctx.task_loss
    task = _with_rate_term(base, state, gamma)
    try:
        ctx.fit(
            optimizer,
            cfg.epochs if epochs is None else epochs,
            phase,
            task_loss=task,
            method_state=lambda: list(state.parameters()),
            epoch_hook=epoch_hook,
        )
    finally:
        for mod, name, _ in plan:
            parametrize.remove_parametrizations(mod, name, leave_parametrized=False)
        for p, req in frozen:
            p.requires_grad_(req)
        # the parametrizations are gone: ctx.params name the model's own weights again
        ctx.params.update({n: _owner_weight(ctx.model, n) for n in ctx.params})
    return {"epochs": log, "gamma_frozen": gamma.frozen}


def _with_rate_term(base: Callable, state: HarpState, gamma: DynamicGamma) -> Callable:
    def task(logits: torch.Tensor, y: torch.Tensor, x_used: torch.Tensor) -> torch.Tensor:
        return base(logits, y, x_used) + gamma() * state.rate_loss()

    return task


def kept_counts(rates: Sequence[float], sizes: Sequence[int], sparsity: float) -> List[int]:
    """Weights kept per layer: exactly ``sparsity``'s total, shared in proportion to the
    learned ``k_l n_l`` (largest remainder, each layer at most its size)."""
    total = keep_count(sum(sizes), sparsity)
    return allocate([k * n for k, n in zip(rates, sizes)], list(sizes), total)


def final_masks(state: HarpState, names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Unstructured: exactly the target's weights, spread over the layers in proportion to the
    learned ``k_l n_l``, each layer its top ``|scores|``."""
    counts = kept_counts(state.rates().detach().tolist(), state.sizes, state.sparsity)
    return {
        n: topk_mask(s.detach().abs(), c).to(s.device)
        for n, s, c in zip(names, state.scores, counts)
    }


def final_channels(state: HarpState, iters: int = 60) -> List[int]:
    """Structured: channels per group at the learned rates, scaled down by the largest common
    factor (bisection) whose student keeps at most the target's MACs."""
    k = state.rates().detach().double()
    target = state.target_kept()

    def counts(c: float) -> List[int]:
        return [kept_channels(n, c * float(ki)) for n, ki in zip(state.sizes, k)]

    def kept(cs: List[int]) -> float:
        return float(state.kept(torch.tensor([c / n for c, n in zip(cs, state.sizes)])))

    if kept(counts(1.0)) <= target + 1e-12:
        return counts(1.0)
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(counts(mid)) <= target + 1e-12 else (lo, mid)
    return counts(lo)


@register_method("harp", options=HarpOptions, structured=True, awp=False)
def harp_prune(ctx: PruneContext) -> PruneOutcome:
    cfg = ctx.cfg
    names = list(ctx.params)
    state, plan = build_state(ctx)
    record = train_rates(ctx, state, plan)
    record["learned_rates"] = [round(float(k), 6) for k in state.rates().detach()]
    if not cfg.structured:
        masks = final_masks(state, names)
        apply_masks(ctx.params, masks)
        record["layers"] = names
        return PruneOutcome(masks, cfg.finetune_epochs, {"harp": record})
    groups = channel_groups(ctx.model, ctx.input_shape, cfg.include_first, cfg.include_last)
    if len(groups) != len(state.scores):
        raise RuntimeError("channel groups changed during HARP's pruning phase")
    counts = final_channels(state)
    keep = {
        g.root: topk_mask(s.detach().abs().cpu(), c)
        for g, s, c in zip(groups, state.scores, counts)
    }
    record["layers"] = [g.root for g in groups]
    notes = shrink(ctx.model, ctx.input_shape, groups, keep)
    notes["harp"] = record
    ctx.params.clear()
    ctx.params.update(prunable_params(ctx.model, cfg.include_first, cfg.include_last))
    return PruneOutcome(None, cfg.finetune_epochs, notes)


def _owner_weight(model: nn.Module, pname: str) -> nn.Parameter:
    mod_name = pname.rpartition(".")[0]
    return (model.get_submodule(mod_name) if mod_name else model).weight
