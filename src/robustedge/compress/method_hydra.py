"""HYDRA (Sehwag et al., NeurIPS 2020): learn which weights to keep with the robust loss.

Every prunable weight gets an importance score, initialised to the scaled magnitude
``sqrt(6 / fan_in) * W / max|W|`` (HYDRA's init). With all weights frozen, the forward pass
uses ``W * m`` where ``m`` is the exact top-k mask of ``|scores|`` (global or per layer) and
the gradient reaches the scores straight through the mask. Only the scores are trained, with
the robust loss (TRADES with beta 6 by default). The final mask then stays fixed while the
weights are fine-tuned (pipeline). Scores are one weight-sized tensor of extra state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from robustedge.compress.common import PruneContext, PruneOutcome, make_optimizer
from robustedge.compress.config import MethodOptions, positive, register_method
from robustedge.compress.prox import topk_masks
from robustedge.compress.targets import apply_masks
from robustedge.config import setting


@dataclass(frozen=True)
class HydraOptions(MethodOptions):
    """HYDRA's own setting."""

    score_lr: float = setting(0.01, help="Learning rate of HYDRA's importance scores.")

    def __post_init__(self) -> None:
        positive(self, "score_lr")


class _STEMask(torch.autograd.Function):
    """Forward: the given 0/1 mask; backward: the gradient passes unchanged to the scores."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class ScoreSet(nn.Module):
    """The scores of all prunable layers and their shared (cached) top-k masks."""

    def __init__(self, params: Dict[str, nn.Parameter], sparsity: float, scope: str) -> None:
        super().__init__()
        self.names: List[str] = list(params)
        self.sparsity, self.scope = sparsity, scope
        self.scores = nn.ParameterList()
        for p in params.values():
            w = p.detach()
            fan_in = w[0].numel()
            init = math.sqrt(6.0 / fan_in) * w / w.abs().max().clamp_min(1e-12)
            self.scores.append(nn.Parameter(init.clone()))
        self._key = None
        self._masks: Dict[str, torch.Tensor] = {}

    def masks(self) -> Dict[str, torch.Tensor]:
        key = tuple(s._version for s in self.scores)
        if key != self._key:
            with torch.no_grad():
                scores = {n: s.detach().abs() for n, s in zip(self.names, self.scores)}
                self._masks = topk_masks(scores, self.sparsity, self.scope)
            self._key = key
        return self._masks


class _Masked(nn.Module):
    """Parametrization ``W -> W * STE(mask(scores))`` for one layer."""

    def __init__(self, scoreset: ScoreSet, index: int) -> None:
        super().__init__()
        self.index = index
        object.__setattr__(self, "scoreset", scoreset)  # not a submodule (no duplicate params)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        name = self.scoreset.names[self.index]
        scores = self.scoreset.scores[self.index]
        return w * _STEMask.apply(scores, self.scoreset.masks()[name])


def _owner(model: nn.Module, pname: str):
    mod_name = pname.rpartition(".")[0]
    return model.get_submodule(mod_name) if mod_name else model


# HYDRA trains scores with frozen weights (no weight perturbation), robustly with TRADES
@register_method("hydra", options=HydraOptions, awp=False, defaults={"adversary": "trades"})
def hydra_prune(ctx: PruneContext) -> PruneOutcome:
    cfg = ctx.cfg
    scoreset = ScoreSet(ctx.params, cfg.sparsity, cfg.scope.value).to(ctx.device)
    frozen = [(p, p.requires_grad) for p in ctx.model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    owners = [_owner(ctx.model, n) for n in ctx.params]
    for i, mod in enumerate(owners):
        parametrize.register_parametrization(mod, "weight", _Masked(scoreset, i))
    optimizer = make_optimizer(scoreset.parameters(), cfg, lr=cfg.options.score_lr)
    try:
        ctx.fit(
            optimizer, cfg.epochs, "hydra-scores", method_state=lambda: list(scoreset.parameters())
        )
    finally:
        for mod in owners:
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
        for p, req in frozen:
            p.requires_grad_(req)
    # parameters were re-created by parametrize: look them up again
    params = {n: _owner(ctx.model, n).weight for n in ctx.params}
    ctx.params.clear()
    ctx.params.update(params)
    masks = {n: m.clone() for n, m in scoreset.masks().items()}
    apply_masks(ctx.params, masks)
    return PruneOutcome(masks, cfg.finetune_epochs)
