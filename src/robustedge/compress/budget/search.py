"""The search over channel fractions: the widest student that meets a budget.

:func:`search_structure` shrinks copies of the teacher by removing the same fraction of output
channels from every prunable layer (the per-layer ranking of structured prox, so the widths
depend only on that fraction), measures each candidate, and returns the smallest fraction (the
widest student) that meets the limit, by :func:`bisect` over a grid of fractions (the measures
shrink as channels go).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Tuple

import torch.nn as nn

from robustedge.compress.budget.measures import Measure
from robustedge.compress.budget.spec import Budget, Quantity
from robustedge.compress.structured import channel_groups, channel_keep_masks, shrink
from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

GRID = 64  # channel fractions searched: 0, 1/64, ..., 63/64
CHANNELS, WEIGHTS = "channels", "weights"  # how a flash candidate was made smaller


@dataclass
class Candidate:
    """One measured structure: the fraction of channels removed per layer and its widths."""

    channel_sparsity: float
    widths: Dict[str, int]
    value: float
    meets: bool
    weight_sparsity: float = 0.0  # flash: fraction of prunable weights zeroed (unstructured)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SearchResult:
    """The widest candidate that meets the budget, and every candidate measured."""

    budget: Budget
    channel_sparsity: float
    value: float
    teacher_value: float
    candidates: List[Candidate] = field(default_factory=list)
    weight_sparsity: float = 0.0  # flash: the unstructured sparsity chosen instead of channels
    choice: Dict[str, Any] = field(default_factory=dict)  # flash: why this structure
    widths: Dict[str, int] = field(default_factory=dict)  # per-layer widths (shape "layers")
    full_widths: Dict[str, int] = field(default_factory=dict)  # the teacher's

    def layer_sparsity(self) -> Dict[str, float]:
        """Per layer, the fraction of its channels removed (empty: one fraction for all)."""
        return {n: 1.0 - w / self.full_widths[n] for n, w in self.widths.items()}

    @property
    def structure(self) -> str:
        return WEIGHTS if self.weight_sparsity > 0 else CHANNELS

    def to_dict(self) -> Dict[str, Any]:
        out = {
            **self.budget.to_dict(),
            "channel_sparsity": self.channel_sparsity,
            "predicted": self.value,
            "teacher": self.teacher_value,
            "candidates": [c.to_dict() for c in self.candidates],
        }
        out["shape"] = "layers" if self.widths else "uniform"  # what the search did
        if self.widths:
            out.update(widths=self.widths, teacher_widths=self.full_widths)
        if self.budget.quantity in (Quantity.FLASH_KB, Quantity.TFLM_FLASH_KB):
            out.update(structure=self.structure, weight_sparsity=self.weight_sparsity)
            out["choice"] = self.choice
        return out


def shrunk_copy(
    model: nn.Module,
    input_shape: Tuple[int, int, int],
    channel_sparsity: float,
    include_first: bool = False,
    include_last: bool = False,
) -> Tuple[nn.Module, Dict[str, int]]:
    """A copy of ``model`` with ``channel_sparsity`` of every prunable layer's output channels
    removed (per-layer ranking, as structured prox does) and its widths ``{layer: channels}``."""
    student = copy.deepcopy(model).cpu().eval()
    groups = channel_groups(student, input_shape, include_first, include_last)
    keep = channel_keep_masks(groups, channel_sparsity, "layer")
    widths = {n: int(k.sum()) for n, k in keep.items()}
    if channel_sparsity > 0:
        shrink(student, input_shape, groups, keep)
    return student, widths


def bisect(probe: Callable[[int], Candidate], lo: int, hi: int, best: Candidate) -> Candidate:
    """The candidate of the smallest index in ``(lo, hi]`` that meets, by bisection: ``lo``
    fails, ``hi`` meets (its candidate ``best``), and what ``probe(i)`` measures falls as
    ``i`` grows."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        c = probe(mid)
        if c.meets:
            hi, best = mid, c
        else:
            lo = mid
    return best


class ChannelProbe:
    """Measures the student with ``i / grid`` of its channels removed per layer; remembers
    every candidate, and measures each set of widths once."""

    def __init__(
        self,
        model: nn.Module,
        input_shape: Tuple[int, int, int],
        limit: float,
        measure: Measure,
        layers: Tuple[bool, bool] = (False, False),
        grid: int = GRID,
    ) -> None:
        self.model, self.input_shape, self.limit = model, input_shape, limit
        self.measure, self.layers, self.grid = measure, layers, grid
        self.seen: Dict[Tuple[int, ...], float] = {}
        self.candidates: List[Candidate] = []

    def __call__(self, i: int) -> Candidate:
        s = i / self.grid
        student, widths = shrunk_copy(self.model, self.input_shape, s, *self.layers)
        key = tuple(widths.values())
        if key not in self.seen:
            self.seen[key] = float(self.measure(student))
            logger.info("budget search: %.4f of channels removed -> %.6g", s, self.seen[key])
        c = Candidate(s, widths, self.seen[key], self.seen[key] <= self.limit)
        self.candidates.append(c)
        return c


def search_structure(
    model: nn.Module,
    input_shape: Tuple[int, int, int],
    budget: Budget,
    measure: Measure,
    include_first: bool = False,
    include_last: bool = False,
    grid: int = GRID,
) -> SearchResult:
    """Bisection over channel fractions ``i / grid``: the smallest that meets ``budget``.

    Raises RobustEdgeError (one line) when even the narrowest student (every prunable layer
    down to one channel, or ``(grid - 1) / grid`` of its channels gone) does not fit.
    """
    probe = ChannelProbe(
        model, input_shape, budget.limit, measure, (include_first, include_last), grid
    )
    first = probe(0)
    if first.meets:
        return SearchResult(budget, 0.0, first.value, first.value, probe.candidates)
    last = probe(grid - 1)
    if not last.meets:
        raise RobustEdgeError(
            f"budget {budget.name}={budget.limit:g} cannot be met by removing "
            f"channels: the narrowest student needs {last.value:.6g} {budget.unit} "
            f"(the teacher {first.value:.6g})"
        )
    best = bisect(probe, 0, grid - 1, last)
    return SearchResult(budget, best.channel_sparsity, best.value, first.value, probe.candidates)
