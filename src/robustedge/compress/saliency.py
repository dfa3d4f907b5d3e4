"""Per-layer sparsity budgets from a robust saliency search (issue 24: "the default learns
or searches how much to prune in each layer").

Measure, once, when prox's sparsity ramp starts: on a probe of ``PROBE_IMAGES`` training images
attacked with PGD (the training eps and steps, the probe's own random stream), each weight's
estimated rise of the robust loss if it alone were zeroed (:func:`saliencies`: OBD's
second-order term with the empirical Fisher, or the first-order Taylor term). Choose: the
global top-k of these saliencies at the target; the share of each layer in it is that layer's
budget (:func:`search`). prox then keeps each layer at its share of the ramp, ranking the
weights inside a layer by magnitude as before (:func:`budget_masks`). So the spread of the
sparsity over the layers is measured on the robust loss instead of inherited from a global
magnitude ranking (docs/compression-diagnosis.md, section 10). Under torchrun every rank
probes its own shard and the saliencies are averaged over ranks: all ranks choose the same
budgets.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustedge import distributed
from robustedge.attacks import PGD
from robustedge.compress.prox import largest_remainders, topk_mask, topk_masks

PROBE_IMAGES = 512  # training images the saliencies are measured on (all ranks together)
ROUNDS = 8  # the search prunes in this many rounds, ranking the survivors again in each
PROBE_SEED = 7717  # the probe attack's own random stream (the training streams are untouched)


def probe_batches(batches: Iterable, device: torch.device, images: int = PROBE_IMAGES):
    """The first ``images / world`` images of ``batches`` (this rank's shard), on ``device``."""
    want, out, got = max(1, images // distributed.world().size), [], 0
    for x, y in batches:
        out.append((x[: want - got].to(device), y[: want - got].to(device)))
        got += len(out[-1][1])
        if got >= want:
            break
    return out


def saliencies(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    probe: Sequence[Tuple[torch.Tensor, torch.Tensor]],
    eps: float,
    steps: int,
    kind: str,
) -> Dict[str, torch.Tensor]:
    """Each weight's estimated rise of the robust loss if it alone were zeroed, from the
    per-image gradients ``g`` of the cross-entropy on PGD-``steps`` examples (crafted against
    ``model`` now, at ``eps``; clean images when 0): ``fisher``, the second-order term
    ``E[g^2] w^2 / 2`` (OBD with the empirical Fisher for the Hessian's diagonal), or
    ``taylor``, the first-order ``|E[g] w|``. Means over the probe images of every rank."""
    gen = torch.Generator().manual_seed(PROBE_SEED + distributed.world().rank)
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training, n_img = model.training, 0
    model.eval()
    try:
        for x, y in probe:
            x_adv = PGD(model, eps, steps=steps, generator=gen).perturb(x, y) if eps > 0 else x
            for i in range(len(y)):
                grads = torch.autograd.grad(
                    F.cross_entropy(model(x_adv[i : i + 1]), y[i : i + 1]), list(params.values())
                )
                for (n, _), g in zip(params.items(), grads):
                    acc[n] += g * g if kind == "fisher" else g
            n_img += len(y)
    finally:
        model.train(was_training)
    total = distributed.all_sum([float(n_img)])[0]
    summed = distributed.average_tensors(list(acc.values()))  # mean over ranks of the sums
    size = distributed.world().size
    out = {}
    for (n, p), a in zip(params.items(), summed):
        mean = a * size / total
        w = p.detach()
        out[n] = 0.5 * mean * w * w if kind == "fisher" else (mean * w).abs()
    return out


def search(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    batches: Iterable,
    device: torch.device,
    sparsity: float,
    eps: float,
    steps: int,
    kind: str,
    rounds: int = ROUNDS,
) -> Tuple[Dict[str, float], Dict[str, object]]:
    """(per-layer sparsities, what was measured): the share of each layer in the global top-k
    of :func:`saliencies` on the first ``PROBE_IMAGES`` images of ``batches``, pruned in
    ``rounds`` steps (:func:`round_sparsities`); each round ranks the surviving weights of the
    model pruned so far, so a layer that loses weights sees the rest of its weights matter
    more. The weights are restored afterwards."""
    probe = probe_batches(batches, device)
    keep = {n: p.detach().clone() for n, p in params.items()}
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    try:
        for s in round_sparsities(sparsity, rounds):
            scores = saliencies(model, params, probe, eps, steps, kind)
            alive = {
                n: torch.where(masks[n], v, torch.full_like(v, -1.0)) for n, v in scores.items()
            }
            masks = topk_masks(alive, s, "global")
            _set(params, {n: keep[n] * masks[n] for n in params})
    finally:
        _set(params, keep)
    budgets = {n: 1.0 - float(m.float().mean()) for n, m in masks.items()}
    report = {"saliency": kind, "probe_images": sum(len(y) for _, y in probe), "rounds": rounds}
    return budgets, report


def _set(params: Mapping[str, nn.Parameter], values: Mapping[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(values[n])


def round_sparsities(sparsity: float, rounds: int):
    """The sparsity after each round: the density falls geometrically from 1 to the target's
    (each round keeps the same fraction of what is left)."""
    return [1.0 - (1.0 - sparsity) ** (r / rounds) for r in range(1, rounds + 1)]


def budget_masks(
    scores: Mapping[str, torch.Tensor], budgets: Mapping[str, float], share: float
) -> Dict[str, torch.Tensor]:
    """Top-k per layer at sparsity ``budgets[n] * share`` (``share``: where the ramp is, as a
    fraction of the target): the removed counts, rounded by largest remainders, total exactly
    ``round(share * sum(budgets[n] * size_n))``."""
    sizes = {n: s.numel() for n, s in scores.items()}
    want = {n: budgets[n] * share * sizes[n] for n in sizes}
    cut = largest_remainders(want, int(round(sum(want.values()))), sizes)
    return {n: topk_mask(s, sizes[n] - cut[n]) for n, s in scores.items()}
