"""Budgets choose the shape: non-uniform per-layer widths by robust loss per unit saved.

Today's search (:func:`~robustedge.compress.budget.search.search_structure`) removes the same
fraction of channels from every layer. At small budgets that starves the layers that carry the
robustness (LeNet-5 at 3.1 KiB of flash kept 1 of 6 channels in every layer). The greedy search
here instead shrinks one layer at a time (NetAdapt's loop, with a robust criterion):

1. a move must save ``need``: :data:`MOVE_SHARE` of the current value, or what is left above
   the limit if that is less (so the last move lands just under the limit, not far below);
2. for every prunable layer (channel group) with more than one channel, the candidate removes
   the fewest of its channels (weakest first, by the per-layer ranking the students use) that
   save ``need`` in the budget's unit (or all but one, if none do); the value is that of the
   teacher cut to those widths, as the students are cut;
3. the candidate is cut from the current student, given a short adversarial fine-tune
   (:class:`Recovery`, NetAdapt's short-term fine-tune; none when not given) and scored by the
   robust loss it adds per unit of the saving needed, ``(L(cand) - L(current)) / min(saved,
   need)``, with ``L`` the cross-entropy on PGD examples crafted against the candidate itself
   (:class:`Sensitivity`, a fixed batch of training images);
4. the cheapest candidate (with its fine-tuned weights) becomes the current student; repeat
   until the value is within the limit. A budget no width can meet is refused in one line.

Measured on digits (docs/robust-methods.md): scored on losses measured *before* any fine-tune,
the search starved LeNet-5's hidden layers (fc 120 -> 1 or 84 -> 2): an un-tuned cut sits at
chance-level loss, after which every further cut adds almost nothing per byte and the cheapest
bytes win. The short fine-tune keeps the loss informative down to the limit.
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

MOVE_SHARE = 1 / 8  # share of the current value one greedy move saves (at least)
SENSITIVITY_N = 256  # training images the robust sensitivity is measured on
RECOVERY_N = 1024  # training images a candidate's short fine-tune draws from
RECOVERY_ITERS = 64  # Adam steps of a candidate's short fine-tune (batches of RECOVERY_BATCH)
RECOVERY_BATCH = 64
RECOVERY_LR = 1e-3

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


@dataclass
class Recovery:
    """A candidate's short fine-tune before its robust loss is measured (in place): ``iters``
    (None: :data:`RECOVERY_ITERS`) Adam steps of PGD adversarial training on seeded batches of
    ``(x, y)``."""

    x: torch.Tensor
    y: torch.Tensor
    eps: float
    steps: int
    seed: int = 0
    iters: Optional[int] = None

    def __call__(self, model: nn.Module) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(model.parameters(), lr=RECOVERY_LR)
        for _ in range(self.iters or RECOVERY_ITERS):
            idx = torch.randint(len(self.x), (RECOVERY_BATCH,), generator=gen)
            x, y = self.x[idx], self.y[idx]
            attack = PGD(model.eval(), self.eps, steps=self.steps, generator=gen)
            x_adv = attack.perturb(x, y)
            opt.zero_grad()
            F.cross_entropy(model.train()(x_adv), y).backward()
            opt.step()
        model.eval()


def sensitivity_batch(x: torch.Tensor, y: torch.Tensor, seed: int, n: int = SENSITIVITY_N):
    """A fixed random subset of ``n`` training images (seeded), as tensors."""
    return _subset(x, y, seed, 0, n)


def recovery_batch(x: torch.Tensor, y: torch.Tensor, seed: int, n: int = RECOVERY_N):
    """The ``n`` training images after :func:`sensitivity_batch`'s in the same seeded order
    (disjoint from it while the set is large enough), as tensors."""
    return _subset(x, y, seed, SENSITIVITY_N, n)


def _subset(x, y, seed: int, start: int, n: int):
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    idx = idx[start : start + n] if len(idx) > start else idx[:n]
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


@dataclass
class Move:
    """One candidate: the widths after it, their value, the (fine-tuned) student and its loss."""

    widths: Widths
    value: float
    score: float = 0.0
    loss: float = 0.0
    student: Optional[nn.Module] = None


class GreedyShape:
    """The greedy width search's state: the current student, its widths, value and robust
    loss, and every move taken."""

    def __init__(
        self, model, input_shape, measure: Measure, sensitivity, layers, share, recover=None
    ) -> None:
        self.teacher, self.input_shape, self.layers = model, input_shape, layers
        self.measure, self.sensitivity, self.recover = measure, sensitivity, recover
        self.full = full_widths(model, input_shape, layers)
        self.share = share
        self.widths = dict(self.full)
        self.model = copy.deepcopy(model).cpu().eval()
        self.value = float(measure(model))
        self.loss = float(sensitivity(self.model))
        self.candidates: List[Candidate] = []

    def need(self, limit: float) -> float:
        """What the next move must save: ``share`` of the current value, or the excess over
        ``limit`` if that is less."""
        return min(self.share * self.value, self.value - limit)

    def cut(self, name: str, k: int) -> Move:
        """Layer ``name`` less ``k`` channels: its widths and value (the teacher cut so)."""
        widths = {**self.widths, name: self.widths[name] - k}
        return Move(widths, float(self.measure(shrunk_to(self.teacher, *self._at(widths)))))

    def _at(self, widths: Widths):
        return self.input_shape, widths, self.layers

    def fewest(self, name: str, need: float) -> Optional[Move]:
        """The fewest channels of layer ``name`` whose removal saves ``need`` (bisection; all
        but one when none do); None when the layer cannot shrink or saves nothing."""
        lo, hi = 0, self.widths[name] - 1
        if hi < 1:
            return None
        best = self.cut(name, hi)
        if best.value >= self.value:
            return None
        if self.value - best.value < need:
            return best
        while hi - lo > 1:
            mid = (lo + hi) // 2
            move = self.cut(name, mid)
            if self.value - move.value >= need:
                hi, best = mid, move
            else:
                lo = mid
        return best

    def candidate(self, name: str, need: float) -> Optional[Move]:
        """The move on layer ``name`` scored: the current student cut to its widths, fine-tuned
        (``recover``), robust loss added per unit of the saving ``need``."""
        move = self.fewest(name, need)
        if move is None:
            return None
        move.student = shrunk_to(self.model, *self._at(move.widths))
        if self.recover is not None:
            self.recover(move.student)
        move.loss = float(self.sensitivity(move.student))
        move.score = (move.loss - self.loss) / min(self.value - move.value, need)
        return move

    def step(self, limit: float) -> bool:
        """Take the cheapest move; False when no layer can shrink further."""
        need = self.need(limit)
        found = [c for c in (self.candidate(n, need) for n in self.widths) if c is not None]
        if not found:
            return False
        best = min(found, key=lambda c: c.score)
        self.widths, self.value, self.loss = best.widths, best.value, best.loss
        self.model = best.student
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
    share: float = MOVE_SHARE,
    recover: Optional[Callable[[nn.Module], None]] = None,
) -> SearchResult:
    """Per-layer widths that meet ``budget`` (measured by ``measure``), shrinking greedily the
    layer whose move adds the least robust loss (``sensitivity``, after ``recover``'s short
    fine-tune when given) per unit saved.

    Raises RobustEdgeError (one line) when every layer is down to one channel and the student
    still does not fit."""
    layers = (include_first, include_last)
    state = GreedyShape(model, input_shape, measure, sensitivity, layers, share, recover)
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
