"""Several budgets at once (``--budget arena_kb=28,tflm_flash_kb=23``): one search, every limit
measured and recorded on its own.

:class:`JointStrategy` holds one strategy per limit (:data:`STRATEGIES`: arena measured by
TFLM, TFLM flash by the calibrated estimate, ...). With an arena limit, the TFLM flash of a
candidate is the size of the very file the arena was measured on (exact: the estimate erred by
about a tenth on ResNet-8, on the safe side, which cost the student width). A candidate's
value is its binding constraint's share of its limit, ``max_i v_i / L_i``: it meets the joint
budget (value <= 1) exactly when it meets every limit, and it falls as channels go because
each ``v_i`` does, so the channel searches (one fraction for every layer, or per-layer
widths) run unchanged on it. The joint search removes channels only (zeroed weights shrink no
arena). The trained student is measured by every part's own ``measure_student``; a part over
its limit corrects what it aims at (``widen``) and the student is searched and trained once
more, as for one budget.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch.nn as nn

from robustedge.compress.budget.measures import BudgetMeasures
from robustedge.compress.budget.search import GRID, SearchResult, shrunk_copy
from robustedge.compress.budget.shape import shrunk_to
from robustedge.compress.budget.spec import JointBudget, Quantity
from robustedge.compress.budget.strategies import (
    STRATEGIES,
    BudgetStrategy,
    FlashStrategy,
    Teacher,
    channel_search,
)
from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)


def structure_key(model: nn.Module) -> Tuple[Tuple[int, ...], ...]:
    """The model's parameter shapes: what tells two channel-shrunk candidates apart."""
    return tuple(tuple(p.shape) for p in model.parameters())


class JointStrategy(BudgetStrategy):
    """Every limit of a :class:`JointBudget`, searched as one."""

    def __init__(
        self, budget: JointBudget, teacher: Teacher, measures: Optional[BudgetMeasures] = None
    ) -> None:
        super().__init__(budget, teacher, measures)  # type: ignore[arg-type]
        self.joint = budget
        self.parts = [STRATEGIES[b.quantity](b, teacher, measures) for b in budget.budgets]
        self.seen: Dict[Tuple[Tuple[int, ...], ...], Dict[str, float]] = {}
        self.student: Dict[str, float] = {}  # the trained student, per limit

    def prepare(self) -> None:
        """Each part's own refusals and calibration; with an arena limit, a TFLM flash part
        only refuses: its candidates' files are the arena's exports, so the teacher's export
        that calibrates its estimate is left out (made only if the estimate is ever used)."""
        arena = any(p.budget.quantity == Quantity.ARENA_KB for p in self.parts)
        for p in self.parts:
            if (
                arena
                and isinstance(p, FlashStrategy)
                and p.budget.quantity == Quantity.TFLM_FLASH_KB
            ):
                p.refuse_unreachable()
            else:
                p.prepare()

    def values(self, model: nn.Module) -> Dict[str, float]:
        """``{quantity: value}`` of a candidate, measured once per structure."""
        key = structure_key(model)
        if key not in self.seen:
            arena = [p for p in self.parts if p.budget.quantity == Quantity.ARENA_KB]
            got: Dict[str, float] = {}
            for p in arena + [p for p in self.parts if p not in arena]:
                exact = None
                if arena and p.budget.quantity == Quantity.TFLM_FLASH_KB:
                    exact = getattr(arena[0], "last_flash_kb", None)  # the arena's own export
                got[p.budget.name] = float(p.measure(model)) if exact is None else exact
            self.seen[key] = {p.budget.name: got[p.budget.name] for p in self.parts}
        return self.seen[key]

    def share(self, values: Dict[str, float]) -> float:
        """The binding constraint's share of its limit."""
        return max(values[p.budget.name] / p.budget.limit for p in self.parts)

    def measure(self, model: nn.Module) -> float:
        return self.share(self.values(model))

    def search(self) -> SearchResult:
        """The channel search of the budget's shape on :meth:`measure`; a pair no student
        meets is refused in one line naming what the narrowest student needs."""
        t = self.teacher
        try:
            search = channel_search(self.joint, t)  # type: ignore[arg-type]
            found = search(t.model, t.input_shape, self.joint, self.measure, *t.layers)
        except RobustEdgeError:
            narrowest, _ = shrunk_copy(t.model, t.input_shape, (GRID - 1) / GRID, *t.layers)
            need = self.values(narrowest)
            parts = ", ".join(
                f"{p.budget.name} {need[p.budget.name]:.6g} {p.budget.unit} "
                f"(limit {p.budget.limit:g})"
                for p in self.parts
            )
            raise RobustEdgeError(
                f"budget {self.joint.text()} cannot be met by removing channels: the "
                f"narrowest student needs {parts}"
            ) from None
        logger.info(
            "budget %s: %.4f of channels removed (predicted %s)",
            self.joint.text(),
            found.channel_sparsity,
            self.predicted(found),
        )
        return found

    def chosen(self, result: SearchResult) -> nn.Module:
        """The candidate the search chose, rebuilt (its measures are cached)."""
        t = self.teacher
        if result.widths:
            return shrunk_to(t.model, t.input_shape, result.widths, t.layers)
        return shrunk_copy(t.model, t.input_shape, result.channel_sparsity, *t.layers)[0]

    def predicted(self, result: SearchResult) -> Dict[str, float]:
        return self.values(self.chosen(result))

    def measure_student(self, run: Path) -> float:
        self.student = {p.budget.name: float(p.measure_student(run)) for p in self.parts}
        return self.share(self.student)

    def widen(self, result: SearchResult, measured: float) -> bool:
        """Each part over its limit corrects what it aims at; retried when one did."""
        pred = self.predicted(result)
        over = [p for p in self.parts if self.student[p.budget.name] > p.budget.limit]
        fixed = [
            p.widen(
                dataclasses.replace(result, budget=p.budget, value=pred[p.budget.name]),
                self.student[p.budget.name],
            )
            for p in over
        ]
        if any(fixed):
            self.seen.clear()  # the corrected parts measure candidates anew
        return any(fixed)

    def aim(self) -> Dict[str, Any]:
        return {p.budget.name: p.aim() for p in self.parts if p.aim()}

    def constraint(self, p: BudgetStrategy, result: SearchResult) -> Dict[str, Any]:
        """One limit's record: the teacher's, predicted and measured values and ``met`` (the
        part's own verdict: a flash part also needs its export's parity gate)."""
        name, value = p.budget.name, self.student[p.budget.name]
        own = p.record(dataclasses.replace(result, budget=p.budget), value, [])
        out = {**p.budget.to_dict(), "teacher": self.values(self.teacher.model)[name]}
        out.update(predicted=self.predicted(result)[name], student=value, met=own["met"])
        out.update({k: own[k] for k in ("measured", "export_parity") if k in own})
        return out

    def record(
        self, result: SearchResult, measured: float, tries: List[Dict[str, Any]]
    ) -> Dict[str, Any]:
        constraints = [self.constraint(p, result) for p in self.parts]
        return {
            **result.to_dict(),
            "student": measured,
            "met": all(c["met"] for c in constraints),
            "constraints": constraints,
            "tries": tries,
        }

    def warn_over(self, measured: float) -> None:
        for p in self.parts:
            if self.student[p.budget.name] > p.budget.limit:
                p.warn_over(self.student[p.budget.name])
