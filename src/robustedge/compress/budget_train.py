"""Training to a budget: search (:mod:`robustedge.compress.budget`), train the most robust
student of the chosen structure, measure it again, and record it all in the run's metrics.json
(``"budget"``). A latency student measured over its limit, or a flash student whose export
stores more than the budget, is searched and trained once more with the margin or the estimate
corrected by the excess seen.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn

from robustedge.compress.budget import (
    LATENCY_MARGIN,
    WEIGHTS,
    Budget,
    Measure,
    MeasureFactory,
    Quantity,
    SearchResult,
    builtin_measure,
    compressed_weight_bytes,
    search_flash,
    search_structure,
)
from robustedge.compress.config import PRUNERS, CompressConfig, Scope
from robustedge.errors import RobustEdgeError
from robustedge.io import write_json

logger = logging.getLogger(__name__)


def compress_to_budget(
    cfg: CompressConfig,
    budget: Budget,
    out: Path,
    eval_attacks: Sequence[Any] = ("fgsm", "pgd"),
    measure_factory: Optional[MeasureFactory] = None,
    eval_suite: Optional[str] = None,
) -> Dict[str, Any]:
    """Search the structure that meets ``budget``, train the most robust student of that
    structure (:func:`student_config`: structured with per-layer ranking at the found channel
    sparsity, or for a flash budget met by zeroed weights unstructured at the found sparsity;
    prox unless ``cfg.method`` is magnitude), re-measure it and record it all in
    ``out/metrics.json`` under ``"budget"``. Returns the metrics.

    ``measure_factory(teacher_spec, data_name, data_dir)`` supplies the measure (required
    for latency budgets; MACs are computed here). A flash budget without a factory is met by
    :func:`search_flash` and the student's export is measured (``budget.measured``: the
    ``tflite-int8`` file's flash bytes, compressed with the bundle's codec)."""
    from robustedge.compress.pipeline import load_teacher

    if not cfg.pruner.structured:
        able = " or ".join(m for m, p in PRUNERS.items() if p.structured)
        raise RobustEdgeError(
            f"--budget trains a structured student: use --method {able}, not {cfg.method}"
        )
    teacher, spec, t_cfg, data = load_teacher(cfg)
    data_dir = cfg.data_dir if cfg.data else (cfg.data_dir or t_cfg.get("data_dir"))
    if budget.quantity is Quantity.FLASH_KB and measure_factory is None:
        return _flash_budget(
            cfg, budget, Path(out), teacher, spec, data, data_dir, eval_attacks, eval_suite
        )
    if measure_factory is not None:
        measure = measure_factory(spec, data.name, data_dir)
    else:
        measure = builtin_measure(budget, data.input_shape)
    return _measured_budget(
        cfg, budget, Path(out), teacher, data, measure, eval_attacks, eval_suite
    )


def _measured_budget(
    cfg: CompressConfig,
    budget: Budget,
    out: Path,
    teacher: nn.Module,
    data: Any,
    measure: Measure,
    eval_attacks: Sequence[Any],
    eval_suite: Optional[str],
) -> Dict[str, Any]:
    """A MACs or latency budget: the search (a latency budget aims :data:`LATENCY_MARGIN`
    below its limit), the training, and the trained student measured again; a latency student
    measured over its limit is searched and trained once more with the margin widened by the
    excess."""
    from robustedge.models import load_model

    state = {"margin": LATENCY_MARGIN if budget.quantity is Quantity.LATENCY_MS else 0.0}

    def search() -> SearchResult:
        aim = Budget(budget.quantity, budget.limit * (1.0 - state["margin"]), budget.target)
        found = search_structure(
            teacher, data.input_shape, aim, measure, cfg.include_first, cfg.include_last
        )
        logger.info(
            "budget %s=%g: removing %.4f of channels per layer (predicted %.6g %s, aiming at %.6g)",
            budget.quantity.value,
            budget.limit,
            found.channel_sparsity,
            found.value,
            budget.unit,
            aim.limit,
        )
        return dataclasses.replace(found, budget=budget)

    def measure_student(run: Path) -> float:
        student, _ = load_model(run)
        return float(measure(student.eval()))

    def widen(result: SearchResult, final: float) -> bool:
        if state["margin"] == 0.0:  # computed, not measured: nothing to correct
            return False
        state["margin"] = min(0.5, state["margin"] + final / budget.limit - 1.0)
        logger.warning(
            "the trained student measures %.6g %s, over the budget %g: searching again with "
            "%.0f %% held back",
            final,
            budget.unit,
            budget.limit,
            100 * state["margin"],
        )
        return True

    metrics, result, final, tries = _train_to_budget(
        cfg,
        out,
        budget,
        search,
        measure_student,
        widen,
        lambda: dict(state),
        eval_attacks,
        eval_suite,
    )
    metrics["budget"] = {
        **result.to_dict(),
        "student": final,
        "met": final <= budget.limit,
        "margin": state["margin"],
        "tries": tries,
    }
    if final > budget.limit:
        logger.warning(
            "the trained student measures %.6g %s, over the budget %g (measurement noise?)",
            final,
            budget.unit,
            budget.limit,
        )
    write_json(out / "metrics.json", metrics)
    return metrics


def _train_to_budget(
    cfg: CompressConfig,
    out: Path,
    budget: Budget,
    search: Callable[[], SearchResult],
    measure_student: Callable[[Path], float],
    widen: Callable[[SearchResult, float], bool],
    noted: Callable[[], Dict[str, Any]],
    eval_attacks: Sequence[Any],
    eval_suite: Optional[str],
) -> Tuple[Dict[str, Any], SearchResult, float, List[Dict[str, Any]]]:
    """Search, train the student of that structure into ``out`` and measure it (in the
    budget's unit). A student over the limit is searched and trained once more when
    ``widen(result, measured)`` has corrected what ``search`` aims at (False: no retry).
    Returns (metrics, the last search result, its measured value, every try with ``noted()``,
    what the search aimed with, next to predicted and measured)."""
    from robustedge.compress.pipeline import compress_run

    tries: List[Dict[str, Any]] = []
    for attempt in (1, 2):
        aim = noted()
        result = search()
        if attempt > 1:
            shutil.rmtree(out, ignore_errors=True)
        metrics = compress_run(
            student_config(cfg, result), out, eval_attacks=eval_attacks, eval_suite=eval_suite
        )
        final = measure_student(out)
        tries.append({**aim, "predicted": result.value, "measured": final})
        if final <= budget.limit or attempt > 1 or not widen(result, final):
            break
    return metrics, result, final, tries


def student_config(cfg: CompressConfig, result: SearchResult) -> CompressConfig:
    """The student's config: structured with per-layer ranking at the found channel fraction,
    or (a flash budget met by zeroed weights) unstructured, globally ranked, at the found
    sparsity."""
    if result.structure == WEIGHTS:
        return dataclasses.replace(
            cfg, structured=False, scope=Scope.GLOBAL, sparsity=result.weight_sparsity
        )
    return dataclasses.replace(
        cfg, structured=True, scope=Scope.LAYER, sparsity=result.channel_sparsity
    )


def _flash_budget(
    cfg: CompressConfig,
    budget: Budget,
    out: Path,
    teacher: nn.Module,
    spec: Any,
    data: Any,
    data_dir: Optional[str],
    eval_attacks: Sequence[Any],
    eval_suite: Optional[str],
) -> Dict[str, Any]:
    """A flash budget: the teacher's export measured (the estimate's fixed part), the search,
    the training, and the student's export measured; once more with the estimate corrected
    when the measured student is over the budget."""
    from robustedge.export.probe import FLASH_FORMAT, export_flash, export_model, measured_flash

    teacher = teacher.cpu().eval()
    # the weights alone must fit: an impossible budget is refused before anything is exported
    search_flash(teacher, data.input_shape, budget, 0.0, cfg.include_first, cfg.include_last)
    with tempfile.TemporaryDirectory(prefix="robustedge-flash-") as tmp:
        rep = export_model(teacher, spec, data.name, data_dir, FLASH_FORMAT, tmp, "dense")
        t_flash = measured_flash(rep.path(FLASH_FORMAT), FLASH_FORMAT)
    limit_bytes = budget.limit * 1024.0
    # the estimate's fixed part (the file around the weights), corrected after a miss
    state: Dict[str, Any] = {
        "fixed": float(t_flash["flash_bytes"] - compressed_weight_bytes(teacher))
    }

    def search() -> SearchResult:
        found = search_flash(
            teacher, data.input_shape, budget, state["fixed"], cfg.include_first, cfg.include_last
        )
        logger.info(
            "budget flash_kb=%g: %s (predicted %.6g KiB)",
            budget.limit,
            f"{found.weight_sparsity:.2f} of weights zeroed"
            if found.structure == WEIGHTS
            else f"{found.channel_sparsity:.4f} of channels removed per layer",
            found.value,
        )
        return found

    def measure_student(run: Path) -> float:
        with tempfile.TemporaryDirectory(prefix="robustedge-flash-") as tmp:
            state["measured"] = export_flash(run, FLASH_FORMAT, Path(tmp) / "export")
        return state["measured"]["flash_bytes"] / 1024.0

    def widen(result: SearchResult, final: float) -> bool:
        state["fixed"] += (final - result.value) * 1024.0  # the estimate's error
        logger.warning(
            "the trained student stores %d B, over the budget (%d B): searching again with "
            "the estimate corrected",
            state["measured"]["flash_bytes"],
            int(limit_bytes),
        )
        return True

    metrics, result, final, tries = _train_to_budget(
        cfg, out, budget, search, measure_student, widen, dict, eval_attacks, eval_suite
    )
    measured = state["measured"]
    metrics["budget"] = {
        **result.to_dict(),
        "student": final,
        "met": final <= budget.limit,
        "measured": {
            **measured,
            "how": f"{FLASH_FORMAT} exported with default calibration, parity gate off "
            "(the run's own export re-checks parity and records the same sizes in its ledger)",
        },
        "teacher_measured": t_flash,
        "tries": tries,
    }
    if final > budget.limit:
        logger.warning("the trained student stores %.6g KiB, over the budget", final)
    write_json(out / "metrics.json", metrics)
    return metrics
