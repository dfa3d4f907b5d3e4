"""Flash budgets: the calibrated estimate of the stored file, and the search of both ways.

Flash bytes are what the ledger and the bundle count, the exported int8 TFLite file compressed
with the bundle's codec (xz), so zeros count as well as removed channels. :func:`search_flash`
searches both ways of getting there: channels removed (:func:`search_structure`) and weights
zeroed (unstructured, global magnitude ranking, sparsity in steps of 1 %), with a calibrated
estimate of the compressed file (:func:`compressed_weight_bytes` of the int8 weights plus the
file's fixed part, measured once by exporting the teacher). It keeps the candidate that stores
the most non-zero weights within the budget (less a margin for the estimate's error): under xz
a zero-free narrow layer costs about 1 byte per weight, a sparse wide one 2-3 bytes per
non-zero (its positions are stored too), so channels usually win; sparsity is chosen where it
keeps more weights (budgets close to the teacher's size, or layers already at one channel).

The codec is passed in (``pack``, :class:`~robustedge.compress.budget.measures.BudgetMeasures`):
it belongs to the bundle, which compress does not import.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from robustedge.compress.budget.measures import Measure, Pack
from robustedge.compress.budget.search import (
    CHANNELS,
    GRID,
    WEIGHTS,
    Candidate,
    SearchResult,
    bisect,
    search_structure,
    shrunk_copy,
)
from robustedge.compress.budget.shape import shrunk_to
from robustedge.compress.budget.spec import Budget
from robustedge.compress.prox import topk_masks
from robustedge.compress.targets import apply_masks, prunable_params
from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

SPARSITY_GRID = 100  # unstructured sparsities searched for flash: 0, 0.01, ..., 0.99
# Share of a flash budget held back for the estimate's error (the calibrated estimate was
# 0-5 % off the measured xz bytes of trained ResNet-8 / LeNet-5 students).
FLASH_MARGIN = 0.03


def int8_stream(model: nn.Module) -> bytes:
    """The int8 weight storage of ``model`` as the full-int8 TFLite export holds it, in content
    if not in layout: per conv/linear, its weights quantized per output channel (symmetric, as
    the export does) in TFLite's OHWI order, then per output channel an int32 bias, a float32
    scale and an int64 zero point. (BatchNorm, folded into the conv by the export, only rescales
    output channels, which per-channel quantization undoes.)"""
    parts: List[bytes] = []
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            w = m.weight.detach().cpu().float()
            w = (w.permute(0, 2, 3, 1) if w.dim() == 4 else w).reshape(w.shape[0], -1)
            scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
            q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
            bias = m.bias.detach().cpu().float() if m.bias is not None else torch.zeros(len(w))
            qb = torch.round(bias.double() / (scale.double() * 0.01)).clamp(-(2**31), 2**31 - 1)
            parts += [
                q.numpy().tobytes(),
                qb.numpy().astype(np.int32).tobytes(),
                scale.numpy().astype(np.float32).tobytes(),
                np.zeros(len(w), np.int64).tobytes(),
            ]
    return b"".join(parts)


def compressed_weight_bytes(model: nn.Module, pack: Pack) -> int:
    """Bytes of :func:`int8_stream` compressed with ``pack`` (the bundle's default codec: what
    the board stores of the weights)."""
    return len(pack(int8_stream(model)))


def sparse_copy(
    model: nn.Module,
    sparsity: float,
    include_first: bool = False,
    include_last: bool = False,
) -> nn.Module:
    """A copy of ``model`` with ``sparsity`` of its prunable weights zeroed (the smallest
    magnitudes, ranked globally, as unstructured prox ranks by default)."""
    student = copy.deepcopy(model).cpu().eval()
    params = prunable_params(student, include_first, include_last)
    if sparsity > 0 and params:
        scores = {n: p.detach().abs() for n, p in params.items()}
        apply_masks(params, topk_masks(scores, sparsity, "global"))
    return student


def stored_weights(model: nn.Module) -> int:
    """Non-zero conv/linear weights: what a structure keeps."""
    return sum(
        int((m.weight != 0).sum()) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    )


def flash_estimate(fixed_bytes: float, pack: Pack) -> Measure:
    """KiB a model's exported int8 file takes compressed: :func:`compressed_weight_bytes` plus
    ``fixed_bytes`` (the rest of the file, measured on the teacher's export)."""
    return lambda model: (compressed_weight_bytes(model, pack) + fixed_bytes) / 1024.0


class SparsityProbe:
    """Measures the student with ``i / grid`` of its prunable weights zeroed; remembers every
    candidate."""

    def __init__(
        self,
        model: nn.Module,
        limit: float,
        measure: Measure,
        layers: Tuple[bool, bool] = (False, False),
        grid: int = SPARSITY_GRID,
    ) -> None:
        self.model, self.limit, self.measure = model, limit, measure
        self.layers, self.grid = layers, grid
        self.candidates: List[Candidate] = []

    def __call__(self, i: int) -> Candidate:
        s = i / self.grid
        value = float(self.measure(sparse_copy(self.model, s, *self.layers)))
        logger.info("budget search: %.2f of weights zeroed -> %.6g KiB", s, value)
        c = Candidate(0.0, {}, value, value <= self.limit, weight_sparsity=s)
        self.candidates.append(c)
        return c


def search_sparsity(
    probe: SparsityProbe, budget: Budget, teacher_value: float
) -> Optional[SearchResult]:
    """Bisection over sparsities ``i / probe.grid``: the smallest that meets ``probe.limit``
    (the teacher, sparsity 0, does not), or None when even the sparsest student does not."""
    last = probe(probe.grid - 1)
    if not last.meets:
        return None
    best = bisect(probe, 0, probe.grid - 1, last)
    return SearchResult(
        budget, 0.0, best.value, teacher_value, probe.candidates, best.weight_sparsity
    )


def _channels_or_none(
    model: nn.Module,
    input_shape: Tuple[int, int, int],
    aim: Budget,
    measure: Measure,
    layers: Tuple[bool, bool],
    search: Callable[..., SearchResult] = search_structure,
) -> Optional[SearchResult]:
    """``search`` (:func:`search_structure` or a width search with the same arguments), or
    None when removing channels cannot meet ``aim``."""
    try:
        return search(model, input_shape, aim, measure, *layers)
    except RobustEdgeError:
        return None


def _kept(
    model: nn.Module,
    input_shape: Tuple[int, int, int],
    found: Optional[SearchResult],
    layers: Tuple[bool, bool],
) -> Optional[int]:
    """The non-zero weights the structure ``found`` keeps (None: nothing found)."""
    if found is None:
        return None
    return stored_weights(structure_of(model, input_shape, found, layers))


def structure_of(
    model: nn.Module,
    input_shape: Tuple[int, int, int],
    found: SearchResult,
    layers: Tuple[bool, bool] = (False, False),
) -> nn.Module:
    """A copy of ``model`` cut to the structure ``found``: weights zeroed, per-layer widths,
    or one fraction of channels removed."""
    if found.structure == WEIGHTS:
        return sparse_copy(model, found.weight_sparsity, *layers)
    if found.widths:
        return shrunk_to(model, input_shape, found.widths, layers)
    return shrunk_copy(model, input_shape, found.channel_sparsity, *layers)[0]


def flash_refusal(
    budget: Budget,
    sparsest: float,
    narrowest: float,
    teacher_value: float,
    fixed_bytes: float,
    margin: float,
) -> RobustEdgeError:
    """The one-line error of a flash budget neither way can meet (values in KiB)."""
    return RobustEdgeError(
        f"budget flash_kb={budget.limit:g} cannot be met: the smallest students need "
        f"{sparsest:.4g} KiB ({(SPARSITY_GRID - 1) / SPARSITY_GRID:.0%} of "
        f"weights zeroed) and {narrowest:.4g} KiB (narrowest channels), the teacher "
        f"{teacher_value:.4g} KiB"
        + (
            f", of which {fixed_bytes / 1024:.3g} KiB is the file's fixed part"
            if fixed_bytes
            else " (int8 weights compressed, before the rest of the file)"
        )
        + f" ({margin:.0%} held back for the estimate's error)"
    )


def search_flash(
    model: nn.Module,
    input_shape: Tuple[int, int, int],
    budget: Budget,
    fixed_bytes: float,
    pack: Pack,
    include_first: bool = False,
    include_last: bool = False,
    margin: float = FLASH_MARGIN,
    channel_search: Callable[..., SearchResult] = search_structure,
) -> SearchResult:
    """The structure that stores the most non-zero weights within ``budget`` (less ``margin``)
    by the estimate :func:`flash_estimate` (``fixed_bytes``, codec ``pack``): channels removed
    (``channel_search``: one fraction, :func:`search_structure`, or per-layer widths) or
    weights zeroed (:func:`search_sparsity`).

    Raises RobustEdgeError (one line) when neither way fits."""
    aim = budget.aimed(margin)
    measure = flash_estimate(fixed_bytes, pack)
    layers = (include_first, include_last)
    noted: Dict[str, Any] = {"margin": margin, "fixed_bytes": fixed_bytes}
    channels = _channels_or_none(model, input_shape, aim, measure, layers, channel_search)
    if channels is not None and channels.channel_sparsity == 0.0:  # the teacher fits
        return dataclasses.replace(
            channels, budget=budget, choice={"why": "the teacher fits", **noted}
        )
    teacher_value = measure(model)
    probe = SparsityProbe(model, aim.limit, measure, layers)
    weights = search_sparsity(probe, budget, teacher_value) if teacher_value > aim.limit else None
    found = {CHANNELS: channels, WEIGHTS: weights}
    kept = {k: _kept(model, input_shape, r, layers) for k, r in found.items()}
    options = {k: v for k, v in kept.items() if v is not None}
    if not options:
        narrow, _ = shrunk_copy(model, input_shape, (GRID - 1) / GRID, *layers)
        sparsest = probe.candidates[-1].value
        raise flash_refusal(budget, sparsest, measure(narrow), teacher_value, fixed_bytes, margin)
    pick = max(options, key=lambda k: (options[k], k == CHANNELS))
    choice = {
        "structure": pick,
        "why": "keeps the most non-zero weights within the budget",
        "stored_weights": kept,
        "predicted_kib": {k: (r.value if r else None) for k, r in found.items()},
        **noted,
    }
    candidates = (channels.candidates if channels else []) + probe.candidates
    return dataclasses.replace(found[pick], budget=budget, candidates=candidates, choice=choice)
