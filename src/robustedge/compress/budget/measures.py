"""What a budget is measured with.

Measures are functions ``nn.Module -> float`` in the budget's unit. MACs and the int8 weight
storage are computed here. What needs an export or a board (the bundle's codec, an exported
file's flash bytes, latency on a target) is not: compress imports neither export nor device
(an import-linter contract keeps it so). The caller passes those in as a
:class:`BudgetMeasures`, built one layer up
(:class:`robustedge.recipe.budget_measures.BoardMeasures`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

import torch.nn as nn

from robustedge.models import count_macs

Measure = Callable[[nn.Module], float]
Pack = Callable[[bytes], bytes]  # bytes compressed with the bundle's codec
# per output channel of an int8 TFLite conv/linear: int32 bias, float32 scale, int64 zero point
INT8_BYTES_PER_CHANNEL = 4 + 4 + 8


class BudgetMeasures(Protocol):
    """The measures compress cannot take itself (they need export or device), passed in by
    the caller of :func:`robustedge.compress.budget.compress_to_budget`.

    A MACs budget needs none; a flash budget ``pack``, ``model_flash`` and ``run_flash``; a
    latency budget ``latency``; an arena budget ``model_arena`` and ``run_arena``. The flash
    dicts hold at least ``format``, ``flash_bytes`` (the
    file compressed with the bundle's codec: what a board stores) and ``model_bytes``."""

    def pack(self, raw: bytes) -> bytes:
        """``raw`` compressed with the bundle's default codec."""
        ...

    def model_flash(
        self, model: nn.Module, spec: Any, data_name: str, data_dir: Optional[str]
    ) -> Dict[str, Any]:
        """The sizes of ``model``'s exported file (the teacher's: the estimate's calibration)."""
        ...

    def run_flash(self, run: Path) -> Dict[str, Any]:
        """The sizes of the run folder ``run``'s exported file (the trained student), with a
        ``how`` line saying how it was exported and, where its export's parity gate ran,
        ``parity`` (False: the export refused the student, the budget is not met)."""
        ...

    def model_arena(
        self, model: nn.Module, spec: Any, data_name: str, data_dir: Optional[str]
    ) -> Dict[str, Any]:
        """The tensor arena TFLM needs for ``model``'s int8 export (``arena_bytes``)."""
        ...

    def run_arena(self, run: Path) -> Dict[str, Any]:
        """The tensor arena TFLM needs for the run folder ``run``'s int8 export."""
        ...

    def latency(self, target: str, spec: Any, data_name: str, data_dir: Optional[str]) -> Measure:
        """``model -> p50 ms`` on ``target`` for models of architecture ``spec`` (possibly
        shrunk); refuses an emulated target."""
        ...


def macs_measure(input_shape: Tuple[int, int, int]) -> Measure:
    """Dense MACs of one inference (the one MAC counter, :func:`count_macs`)."""
    return lambda model: float(count_macs(model, input_shape)["dense"])


def int8_weight_bytes(model: nn.Module) -> int:
    """Bytes of the int8 model's weight storage: one byte per conv/linear weight, plus an int32
    bias, a float32 scale and an int64 zero point per output channel (BatchNorm folds into
    them). The TFLite container adds a few KB on top (31,944 B for LeNet-5 on digits, whose
    weight storage is 24,926 B)."""
    total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            total += m.weight.numel() + INT8_BYTES_PER_CHANNEL * m.weight.shape[0]
    return total


def flash_measure() -> Measure:
    """KiB of int8 weight storage (:func:`int8_weight_bytes`)."""
    return lambda model: int8_weight_bytes(model) / 1024.0
