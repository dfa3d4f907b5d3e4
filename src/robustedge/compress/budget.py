"""Compression to a budget: find the widest structure that fits what the board allows.

A :class:`Budget` states one limit: ``macs=2M`` (multiply-accumulates per inference),
``flash_kb=64`` (int8 weight storage, KiB) or ``latency_ms=2`` (p50 of one inference,
measured on a named target). :func:`search_structure` shrinks copies of the teacher by removing
the same fraction of output channels from every prunable layer (the per-layer ranking of
structured prox, so the widths depend only on that fraction), measures each candidate, and
returns the smallest fraction (the widest student) that meets the limit, by bisection over a
grid of fractions (the measures shrink as channels go). :func:`compress_to_budget` then trains
the most robust student of exactly that structure with structured prox + KD + adversarial
training, re-measures it, and records the search and the final measurement in the run's
metrics.json (``"budget"``).

Measures are functions ``nn.Module -> float`` in the budget's unit. MACs and flash are computed
here; latency needs a board, so its measure is passed in (built from a device target one layer
up, see :mod:`robustedge.recipe.latency_probe`). Emulated targets are refused for latency.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn

from robustedge.compress.config import CompressConfig, Method
from robustedge.compress.structured import channel_groups, channel_keep_masks, shrink
from robustedge.errors import RobustEdgeError
from robustedge.io import write_json
from robustedge.models import count_macs

logger = logging.getLogger(__name__)

Measure = Callable[[nn.Module], float]
# (teacher spec, data set name, data folder) -> Measure: a latency budget's measure on a target
MeasureFactory = Callable[[Any, str, Optional[str]], Measure]
GRID = 64  # channel fractions searched: 0, 1/64, ..., 63/64
SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
# per output channel of an int8 TFLite conv/linear: int32 bias, float32 scale, int64 zero point
INT8_BYTES_PER_CHANNEL = 4 + 4 + 8


class Quantity(str, enum.Enum):
    MACS = "macs"
    FLASH_KB = "flash_kb"
    LATENCY_MS = "latency_ms"


UNITS = {Quantity.MACS: "MACs", Quantity.FLASH_KB: "KiB", Quantity.LATENCY_MS: "ms"}
FORMS = "macs=N[k|M|G] | flash_kb=N | latency_ms=N"


@dataclass(frozen=True)
class Budget:
    """One limit on the student: ``quantity <= limit`` (in :data:`UNITS`); latency budgets
    name the ``target`` they are measured on."""

    quantity: Quantity
    limit: float
    target: Optional[str] = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "quantity", Quantity(self.quantity))
        except ValueError:
            raise ValueError(
                f"unknown budget '{self.quantity}' (known: {', '.join(q.value for q in Quantity)})"
            ) from None
        if not (math.isfinite(self.limit) and self.limit > 0):
            raise ValueError(f"budget {self.quantity.value} must be a positive number")
        if self.quantity is Quantity.LATENCY_MS and not self.target:
            raise ValueError(
                "a latency budget is measured on a board: give --budget-target "
                "(local or ssh://user@host)"
            )
        if self.quantity is not Quantity.LATENCY_MS and self.target:
            raise ValueError(f"a {self.quantity.value} budget needs no target (it is computed)")

    @classmethod
    def parse(cls, text: str, target: Optional[str] = None) -> Budget:
        """``"macs=2M"``, ``"flash_kb=64"`` or ``"latency_ms=2"`` (ValueError, one line)."""
        key, sep, value = str(text).strip().partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"bad budget '{text}' (want {FORMS})")
        scale = 1.0
        if key == Quantity.MACS.value and value[-1] in SUFFIXES:
            value, scale = value[:-1], SUFFIXES[value[-1]]
        try:
            limit = float(value) * scale
        except ValueError:
            raise ValueError(
                f"bad budget '{text}': '{value}' is not a number (want {FORMS})"
            ) from None
        return cls(key, limit, target)  # type: ignore[arg-type]

    @property
    def unit(self) -> str:
        return UNITS[self.quantity]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "quantity": self.quantity.value,
            "limit": self.limit,
            "unit": self.unit,
            "target": self.target,
        }


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


def builtin_measure(budget: Budget, input_shape: Tuple[int, int, int]) -> Measure:
    """The computed measure of a MACs or flash budget (latency needs a board)."""
    if budget.quantity is Quantity.MACS:
        return macs_measure(input_shape)
    if budget.quantity is Quantity.FLASH_KB:
        return flash_measure()
    raise RobustEdgeError("a latency budget needs a measure from a device target")


@dataclass
class Candidate:
    """One measured structure: the fraction of channels removed per layer and its widths."""

    channel_sparsity: float
    widths: Dict[str, int]
    value: float
    meets: bool

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

    def to_dict(self) -> Dict[str, Any]:
        return {
            **self.budget.to_dict(),
            "channel_sparsity": self.channel_sparsity,
            "predicted": self.value,
            "teacher": self.teacher_value,
            "candidates": [c.to_dict() for c in self.candidates],
        }


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
    seen: Dict[Tuple[int, ...], float] = {}
    candidates: List[Candidate] = []

    def probe(i: int) -> Candidate:
        s = i / grid
        student, widths = shrunk_copy(model, input_shape, s, include_first, include_last)
        key = tuple(widths.values())
        if key not in seen:
            seen[key] = float(measure(student))
            logger.info("budget search: %.4f of channels removed -> %.6g", s, seen[key])
        c = Candidate(s, widths, seen[key], seen[key] <= budget.limit)
        candidates.append(c)
        return c

    first = probe(0)
    if first.meets:
        return SearchResult(budget, 0.0, first.value, first.value, candidates)
    last = probe(grid - 1)
    if not last.meets:
        raise RobustEdgeError(
            f"budget {budget.quantity.value}={budget.limit:g} cannot be met by removing "
            f"channels: the narrowest student needs {last.value:.6g} {budget.unit} "
            f"(the teacher {first.value:.6g})"
        )
    lo, hi, best = 0, grid - 1, last  # lo fails, hi meets
    while hi - lo > 1:
        mid = (lo + hi) // 2
        c = probe(mid)
        if c.meets:
            hi, best = mid, c
        else:
            lo = mid
    return SearchResult(budget, best.channel_sparsity, best.value, first.value, candidates)


def compress_to_budget(
    cfg: CompressConfig,
    budget: Budget,
    out: Path,
    eval_attacks: Sequence[Any] = ("fgsm", "pgd"),
    measure_factory: Optional[MeasureFactory] = None,
    eval_suite: Optional[str] = None,
) -> Dict[str, Any]:
    """Search the structure that meets ``budget``, train the most robust student of that
    structure (``cfg`` with ``structured`` on, per-layer ranking, the found channel sparsity;
    prox unless ``cfg.method`` is magnitude), re-measure it and record it all in
    ``out/metrics.json`` under ``"budget"``. Returns the metrics.

    ``measure_factory(teacher_spec, data_name, data_dir)`` supplies the measure (required
    for latency budgets; MACs and flash are computed here by default)."""
    from robustedge.compress.pipeline import compress_run, load_teacher
    from robustedge.models import load_model

    if cfg.method not in (Method.PROX, Method.MAGNITUDE):
        raise RobustEdgeError(
            f"--budget trains a structured student: use --method prox or magnitude, "
            f"not {cfg.method.value}"
        )
    teacher, spec, t_cfg, data = load_teacher(cfg)
    if measure_factory is not None:
        data_dir = cfg.data_dir if cfg.data else (cfg.data_dir or t_cfg.get("data_dir"))
        measure = measure_factory(spec, data.name, data_dir)
    else:
        measure = builtin_measure(budget, data.input_shape)
    result = search_structure(
        teacher, data.input_shape, budget, measure, cfg.include_first, cfg.include_last
    )
    logger.info(
        "budget %s=%g: removing %.4f of channels per layer (predicted %.6g %s)",
        budget.quantity.value,
        budget.limit,
        result.channel_sparsity,
        result.value,
        budget.unit,
    )
    student_cfg = dataclasses.replace(
        cfg, structured=True, scope="layer", sparsity=result.channel_sparsity
    )
    metrics = compress_run(student_cfg, out, eval_attacks=eval_attacks, eval_suite=eval_suite)
    student, _ = load_model(out)
    final = float(measure(student.eval()))
    metrics["budget"] = {
        **result.to_dict(),
        "student": final,
        "met": final <= budget.limit,
    }
    if final > budget.limit:
        logger.warning(
            "the trained student measures %.6g %s, over the budget %g (measurement noise?)",
            final,
            budget.unit,
            budget.limit,
        )
    write_json(Path(out) / "metrics.json", metrics)
    return metrics
