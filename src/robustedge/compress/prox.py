"""Proximal operators and projections as pure functions on weight tensors.

Paper 1 (Lee & Lee 2021, see SEEDS.md): after every optimizer step, ``w <- prox(w, step)`` with
``step = lr * lam``. L1 gives the soft threshold, the group lasso over output channels the group
soft threshold, and the top-k projection (the prox of the indicator of ``||w||_0 <= k``) lands
on a target sparsity exactly. None of them keeps state beyond the weights.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence

import torch


def soft_threshold(w: torch.Tensor, step: float) -> torch.Tensor:
    """Prox of ``step * ||w||_1``: ``sign(w) * max(|w| - step, 0)`` (elementwise)."""
    if step < 0:
        raise ValueError(f"prox step must be >= 0, got {step}")
    return torch.sign(w) * torch.clamp(w.abs() - step, min=0.0)


def group_norms(w: torch.Tensor) -> torch.Tensor:
    """L2 norm of each output channel/filter: ``w`` is (out, ...) -> (out,)."""
    return w.reshape(w.shape[0], -1).norm(dim=1)


def group_scale(norms: torch.Tensor, step: float) -> torch.Tensor:
    """Per-group factor of the group soft threshold: ``max(0, 1 - step / ||w_g||)``."""
    if step < 0:
        raise ValueError(f"prox step must be >= 0, got {step}")
    return torch.clamp(1.0 - step / norms.clamp_min(1e-12), min=0.0) * (norms > 0)


def group_soft_threshold(w: torch.Tensor, step: float) -> torch.Tensor:
    """Prox of ``step * sum_g ||w_g||_2`` over output channels (rows of ``w``)."""
    scale = group_scale(group_norms(w), step)
    return w * scale.view(-1, *([1] * (w.dim() - 1)))


def keep_count(numel: int, sparsity: float) -> int:
    """Number of entries kept so that exactly ``round(sparsity * numel)`` are zeroed."""
    if not (0.0 <= sparsity < 1.0):
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    return numel - int(round(sparsity * numel))


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask with exactly ``k`` True entries at the largest ``scores`` (ties by index)."""
    flat = scores.reshape(-1)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        idx = torch.topk(flat, k, sorted=False).indices
        mask[idx] = True
    return mask.view(scores.shape)


def topk_masks(
    scores: Mapping[str, torch.Tensor], sparsity: float, scope: str = "global"
) -> Dict[str, torch.Tensor]:
    """Exact top-k masks: ``global`` ranks all entries together, ``layer`` each tensor alone,
    ``erk`` each tensor alone with the Erdos-Renyi-Kernel budgets of :func:`erk_keep_counts`.

    Exactly ``round(sparsity * n)`` entries become False (per tensor for ``layer``, over the
    union for ``global``).
    """
    if scope == "layer":
        return {n: topk_mask(s, keep_count(s.numel(), sparsity)) for n, s in scores.items()}
    if scope == "erk":
        keep = erk_keep_counts({n: tuple(s.shape) for n, s in scores.items()}, sparsity)
        return {n: topk_mask(s, keep[n]) for n, s in scores.items()}
    if scope != "global":
        raise ValueError(f"scope must be 'global', 'layer' or 'erk', got '{scope}'")
    names: Sequence[str] = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).float() for n in names])
    mask = topk_mask(flat, keep_count(flat.numel(), sparsity))
    out, i = {}, 0
    for n in names:
        m = scores[n].numel()
        out[n] = mask[i : i + m].view(scores[n].shape)
        i += m
    return out


def erk_keep_counts(shapes: Mapping[str, Sequence[int]], sparsity: float) -> Dict[str, int]:
    """Weights kept per tensor under the Erdos-Renyi-Kernel budget (Evci et al. 2020, RigL).

    Density of a tensor is ``eps * sum(shape) / prod(shape)`` (conv: ``(c_in + c_out + kh +
    kw) / (c_in c_out kh kw)``; linear: ``(n_in + n_out) / (n_in n_out)``), with one ``eps``
    for all tensors chosen so that the total matches ``sparsity``; a tensor whose density
    would exceed 1 stays dense and ``eps`` is solved again for the rest. Counts are integers
    that sum to exactly ``keep_count(total, sparsity)`` (largest remainders).
    """
    sizes = {n: int(math.prod(sh)) for n, sh in shapes.items()}
    total = sum(sizes.values())
    budget = keep_count(total, sparsity)
    raw = {n: sum(sh) / sizes[n] for n, sh in shapes.items()}
    dense: set = set()
    while True:
        free = budget - sum(sizes[n] for n in dense)
        weight = sum(raw[n] * sizes[n] for n in sizes if n not in dense)
        eps = free / weight if weight > 0 else 0.0
        over = {n for n in sizes if n not in dense and eps * raw[n] > 1.0}
        if not over:
            break
        dense |= over
    want = {n: float(sizes[n]) if n in dense else eps * raw[n] * sizes[n] for n in sizes}
    return largest_remainders(want, budget, sizes)


def largest_remainders(
    want: Mapping[str, float], total: int, cap: Mapping[str, int]
) -> Dict[str, int]:
    """Integer counts near ``want`` that sum to ``total`` (as far as the caps allow): each
    floored (at most ``cap``), then one more for the largest remainders first."""
    out = {n: min(cap[n], int(math.floor(v))) for n, v in want.items()}
    short = total - sum(out.values())
    for n in sorted(want, key=lambda n: want[n] - out[n], reverse=True):
        if short <= 0:
            break
        if out[n] < cap[n]:
            out[n] += 1
            short -= 1
    return out


def project_topk(
    weights: Mapping[str, torch.Tensor], sparsity: float, scope: str = "global"
) -> Dict[str, torch.Tensor]:
    """Euclidean projection onto ``{W : ||W||_0 <= k}``: keep the k largest magnitudes."""
    masks = topk_masks({n: w.abs() for n, w in weights.items()}, sparsity, scope)
    return {n: w * masks[n] for n, w in weights.items()}


def weighted_soft_threshold(w: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Prox of ``sum_i steps_i |w_i|`` (elementwise thresholds, e.g. reweighted L1)."""
    return torch.sign(w) * torch.clamp(w.abs() - steps, min=0.0)


REL_EPS = 0.1  # reweighted L1: epsilon relative to the layer's mean |w|


def reweighted_steps(w: torch.Tensor, step: float, rel_eps: float = REL_EPS) -> torch.Tensor:
    """Per-weight thresholds of reweighted L1 (Candes, Wakin & Boyd 2008), layer-normalised.

    ``step * s^2 / (|w_i| + rel_eps * s)`` with ``s = mean|w|`` of the layer: small weights are
    pushed to zero quickly, large (surviving) ones are barely shrunk, and layers with small
    weights are not wiped out by a global threshold. Weights of the current iterate define
    the penalty, so no state is kept.
    """
    a = w.detach().abs()
    s = a.mean().clamp_min(1e-12)
    return step * s * s / (a + rel_eps * s)
