"""Microcontroller budgets: ``arena_kb`` (the tensor arena TFLM needs: SRAM) and
``tflm_flash_kb`` (the int8 ``.tflite`` file as a TFLM build keeps it in flash: no codec).

- arena (:class:`ArenaStrategy`): each candidate (a shrunk copy of the teacher) is exported to
  int8 TFLite and loaded by the TFLM interpreter, which reports the smallest arena it runs in
  (``measures.model_arena``); the arena depends only on the tensor shapes, so the trained
  student measures what its candidate did (it is measured again on its own export).
- TFLM flash (:class:`TflmFlashStrategy`): the flash strategy with the plain file in place of
  the compressed one (an MCU does not inflate xz): zeroed weights save nothing there, so the
  search removes channels.

The exports and TFLM belong to export and device, which compress does not import: they come
in as ``measures`` (:class:`robustedge.recipe.budget_measures.BoardMeasures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch.nn as nn

from robustedge.compress.budget.measures import BudgetMeasures, Measure
from robustedge.compress.budget.search import SearchResult
from robustedge.compress.budget.spec import Budget, Quantity
from robustedge.compress.budget.strategies import (
    STRATEGIES,
    ChannelStrategy,
    FlashStrategy,
    Teacher,
)
from robustedge.errors import RobustEdgeError


class ArenaStrategy(ChannelStrategy):
    """KiB of tensor arena TFLM needs, measured on each candidate's int8 export."""

    def __init__(
        self, budget: Budget, teacher: Teacher, measures: Optional[BudgetMeasures] = None
    ) -> None:
        if measures is None or not hasattr(measures, "model_arena"):
            raise RobustEdgeError(
                "an arena budget is measured by TFLM on exports: it needs the caller's "
                "measures (robustedge.recipe.budget_measures)"
            )
        super().__init__(budget, teacher, measures)
        self.measured: Dict[str, Any] = {}
        self.last_flash_kb: Optional[float] = None  # the TFLM flash of the last export measured

    def search(self) -> SearchResult:
        """The channel search; a budget the narrowest student misses names the likely cause
        when the first conv is kept (its channels, and the residual stream tied to them, make
        the largest tensors of a ResNet)."""
        try:
            return super().search()
        except RobustEdgeError as e:
            if self.teacher.layers[0]:
                raise
            raise RobustEdgeError(
                f"{e}; the first conv is kept, and its channels (with the residual stream tied "
                "to them) set the largest tensors: try include_first: true"
            ) from None

    def measure(self, model: nn.Module) -> float:
        t = self.teacher
        m = self.measures.model_arena(model.cpu().eval(), t.spec, t.data_name, t.data_dir)
        flash = m.get("tflm_flash_bytes")
        self.last_flash_kb = None if flash is None else flash / 1024.0
        return m["arena_bytes"] / 1024.0

    def measure_student(self, run: Path) -> float:
        self.measured = self.measures.run_arena(run)
        return self.measured["arena_bytes"] / 1024.0

    def record(self, result: Any, measured: float, tries: Any) -> Dict[str, Any]:
        return {**super().record(result, measured, tries), "measured": self.measured}


@dataclass(frozen=True)
class PlainFlash:
    """The caller's measures with flash counted as TFLM stores it: the plain file
    (``model_bytes``), no codec."""

    inner: Any

    def pack(self, raw: bytes) -> bytes:
        return raw

    def model_flash(self, model: nn.Module, spec: Any, data_name: str, data_dir: Any) -> Dict:
        return plain(self.inner.model_flash(model, spec, data_name, data_dir))

    def run_flash(self, run: Path) -> Dict[str, Any]:
        return plain(self.inner.run_flash(run))

    def latency(self, target: str, spec: Any, data_name: str, data_dir: Any) -> Measure:
        return self.inner.latency(target, spec, data_name, data_dir)


def plain(sizes: Dict[str, Any]) -> Dict[str, Any]:
    """A flash record with ``flash_bytes`` the plain file's bytes (what TFLM keeps in flash)."""
    return {**sizes, "flash_bytes": sizes["model_bytes"], "codec": None, "stored_as": "tflm"}


class TflmFlashStrategy(FlashStrategy):
    """KiB of the plain int8 ``.tflite`` file (TFLM's flash), searched like a flash budget."""

    def __init__(
        self, budget: Budget, teacher: Teacher, measures: Optional[BudgetMeasures] = None
    ) -> None:
        super().__init__(budget, teacher, PlainFlash(measures) if measures else None)


STRATEGIES.update({Quantity.ARENA_KB: ArenaStrategy, Quantity.TFLM_FLASH_KB: TflmFlashStrategy})
