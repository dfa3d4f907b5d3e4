"""Budgets choose the shape: non-uniform per-layer widths by robust sensitivity per unit saved.

Today's search (:func:`~robustedge.compress.budget.search.search_structure`) removes the same
fraction of channels from every layer. At small budgets that starves the layers that carry the
robustness (LeNet-5 at 3.1 KiB of flash kept 1 of 6 channels in every layer). The greedy search
here instead shrinks one layer at a time (NetAdapt's loop, with a robust criterion):

1. from the teacher's widths, for every prunable layer (channel group) that still has more than
   one channel, a candidate removes ``step`` of its current channels (at least one, so moves
   get finer as a layer narrows; weakest first by the per-layer ranking the students use);
2. each candidate is measured in the budget's unit and scored by the robust loss it adds per
   unit it saves: ``(L(candidate) - L(current)) / (value(current) - value(candidate))``, with
   ``L`` the cross-entropy on PGD examples crafted against that candidate itself (a fixed
   batch of training images; no fine-tuning, as in NetAdapt's short-term proxy or AMC);
3. the cheapest candidate becomes the current widths; repeat until the value is within the
   limit. A budget no width can meet is refused in one line.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustedge.attacks.pgd import PGD
from robustedge.compress.budget.measures import Measure
from robustedge.compress.budget.search import Candidate, SearchResult
from robustedge.compress.budget.spec import Budget
from robustedge.compress.structured import channel_groups, channel_scores, shrink
from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

WIDTH_STEP = 1 / 16  # share of a layer's current channels one greedy move removes
SENSITIVITY_N = 256  # training images the robust sensitivity is measured on

Widths = Dict[str, int]


@dataclass
class Sensitivity:
    """``model -> robust loss``: mean cross-entropy on PGD examples crafted against ``model``
    on the fixed batch ``(x, y)`` (the same random start for every candidate)."""

    x: torch.Tensor
    y: torch.Tensor
    eps: float
    steps: int
    seed: int = 0

    def __call__(self, model: nn.Module) -> float:
        model = model.eval()
        attack = PGD(model, self.eps, steps=self.steps, generator=self._gen())
        x_adv = attack.perturb(self.x, self.y)
        with torch.no_grad():
            return float(F.cross_entropy(model(x_adv), self.y))

    def _gen(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)


def sensitivity_batch(x: torch.Tensor, y: torch.Tensor, seed: int, n: int = SENSITIVITY_N):
    """A fixed random subset of ``n`` training images (seeded), as tensors."""
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    pick = idx if torch.is_tensor(x) else idx.numpy()
    return torch.as_tensor(x[pick]), torch.as_tensor(y)[idx].long()  # streamed: reads n only


def shrunk_to(
    model: nn.Module,
    input_shape: Tuple[int, int, int],
    widths: Widths,
    layers: Tuple[bool, bool] = (False, False),
) -> nn.Module:
    """A copy of ``model`` keeping ``widths[root]`` channels of each prunable layer (its
    strongest by the per-layer RMS ranking the students use; layers not named keep all)."""
    student = copy.deepcopy(model).cpu().eval()
    groups = channel_groups(student, input_shape, *layers)
    scores = channel_scores(groups, "rms")
    keep = {}
    for g in groups:
        s = scores[g.root]
        k = min(g.channels, max(1, widths.get(g.root, g.channels)))
        mask = torch.zeros(g.channels, dtype=torch.bool)
        mask[torch.topk(s, k).indices.cpu()] = True
        keep[g.root] = mask
    if any(not bool(m.all()) for m in keep.values()):
        shrink(student, input_shape, groups, keep)
    return student


def full_widths(
    model: nn.Module, input_shape: Tuple[int, int, int], layers: Tuple[bool, bool]
) -> Widths:
    """The teacher's channels per prunable layer."""
    return {g.root: g.channels for g in channel_groups(copy.deepcopy(model), input_shape, *layers)}


class GreedyShape:
    """The greedy width search's state: current widths, value, robust loss, and every move."""

    def __init__(self, model, input_shape, measure: Measure, sensitivity, layers, step) -> None:
        self.model, self.input_shape, self.layers = model, input_shape, layers
        self.measure, self.sensitivity = measure, sensitivity
        self.full = full_widths(model, input_shape, layers)
        self.step_share = step
        self.widths = dict(self.full)
        self.value = float(measure(model))
        self.loss = float(sensitivity(model))
        self.candidates: List[Candidate] = []

    def move(self, name: str) -> int:
        """Channels one move removes from layer ``name``: ``step`` of its current width (at
        least one), so moves get finer as a layer narrows."""
        return max(1, int(round(self.step_share * self.widths[name])))

    def candidate(self, name: str) -> Optional[Tuple[float, Widths, float, float]]:
        """(score, widths, value, loss) of removing one move from layer ``name``; None when
        it cannot shrink or saves nothing."""
        if self.widths[name] <= 1:
            return None
        widths = {**self.widths, name: max(1, self.widths[name] - self.move(name))}
        student = shrunk_to(self.model, self.input_shape, widths, self.layers)
        value = float(self.measure(student))
        if value >= self.value:
            return None
        loss = float(self.sensitivity(student))
        return (loss - self.loss) / (self.value - value), widths, value, loss

    def step(self, limit: float) -> bool:
        """Take the cheapest move; False when no layer can shrink further."""
        found = [c for c in (self.candidate(n) for n in self.widths) if c is not None]
        if not found:
            return False
        score, self.widths, self.value, self.loss = min(found, key=lambda c: c[0])
        sparsity = 1 - sum(self.widths.values()) / sum(self.full.values())
        self.candidates.append(
            Candidate(sparsity, dict(self.widths), self.value, self.value <= limit)
        )
        logger.info(
            "width search: %s -> %.6g (robust loss %.4f)", self.widths, self.value, self.loss
        )
        return True


def search_widths(
    model: nn.Module,
    input_shape: Tuple[int, int, int],
    budget: Budget,
    measure: Measure,
    sensitivity: Callable[[nn.Module], float],
    include_first: bool = False,
    include_last: bool = False,
    step: float = WIDTH_STEP,
) -> SearchResult:
    """Per-layer widths that meet ``budget`` (measured by ``measure``), shrinking greedily the
    layer whose move adds the least robust loss (``sensitivity``) per unit saved.

    Raises RobustEdgeError (one line) when every layer is down to one channel and the student
    still does not fit."""
    state = GreedyShape(
        model, input_shape, measure, sensitivity, (include_first, include_last), step
    )
    teacher = state.value
    while state.value > budget.limit:
        if not state.step(budget.limit):
            raise RobustEdgeError(
                f"budget {budget.name}={budget.limit:g} cannot be met by removing "
                f"channels: the narrowest student needs {state.value:.6g} {budget.unit} "
                f"(the teacher {teacher:.6g})"
            )
    sparsity = 1 - sum(state.widths.values()) / sum(state.full.values())
    return SearchResult(
        budget,
        sparsity,
        state.value,
        teacher,
        state.candidates,
        widths=dict(state.widths),
        full_widths=dict(state.full),
    )
