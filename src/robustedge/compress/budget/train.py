"""Training to a budget: search, train the most robust student of the chosen structure,
measure it again, and record it all in the run's metrics.json (``"budget"``). A student
measured over its limit is searched and trained once more when its strategy corrected what the
search aims at (latency: a wider margin; flash: the estimate's fixed part).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from robustedge.attacks import eps_or_default
from robustedge.compress.budget.joint import JointStrategy
from robustedge.compress.budget.measures import BudgetMeasures
from robustedge.compress.budget.search import WEIGHTS, SearchResult
from robustedge.compress.budget.shape import (
    Recovery,
    Sensitivity,
    recovery_batch,
    sensitivity_batch,
)
from robustedge.compress.budget.spec import AnyBudget, JointBudget, Shape
from robustedge.compress.budget.strategies import (
    BudgetStrategy,
    FlashStrategy,
    Teacher,
    make_strategy,
)
from robustedge.compress.config import PRUNERS, CompressConfig, Scope
from robustedge.compress.pipeline import compress_run, load_teacher
from robustedge.errors import RobustEdgeError
from robustedge.io import write_json

logger = logging.getLogger(__name__)

TRIES = 2  # a first try, and one retry with the search corrected


@dataclass
class Trained:
    """The last try: the student's metrics, the structure it was trained to, its measured
    value, and every try (what the search aimed with, predicted and measured)."""

    metrics: Dict[str, Any]
    result: SearchResult
    measured: float
    tries: List[Dict[str, Any]]


def compress_to_budget(
    cfg: CompressConfig,
    budget: AnyBudget,
    out: Path,
    measures: Optional[BudgetMeasures] = None,
    eval_attacks: Optional[Sequence[Any]] = None,
    eval_suite: Optional[str] = None,
) -> Dict[str, Any]:
    """Search the structure that meets ``budget``, train the most robust student of that
    structure (:func:`student_config`: structured with per-layer ranking at the found channel
    sparsity, or for a flash budget met by zeroed weights unstructured at the found sparsity;
    prox unless ``cfg.method`` is magnitude), re-measure it and record it all in
    ``out/metrics.json`` under ``"budget"``. Returns the metrics.

    ``measures`` supplies what compress cannot measure itself (a flash budget's codec and
    exports, a latency budget's board): required for those, unused for MACs. A
    :class:`~robustedge.compress.budget.JointBudget` meets all its limits at once (its record
    has each one under ``"constraints"``)."""
    if not cfg.pruner.structured:
        able = " or ".join(m for m, p in PRUNERS.items() if p.structured)
        raise RobustEdgeError(
            f"--budget trains a structured student: use --method {able}, not {cfg.method}"
        )
    if budget.shape == Shape.LAYERS:  # the method's own refusal, before minutes of search
        dataclasses.replace(
            cfg, structured=True, scope=Scope.LAYER, layer_sparsity={"any layer": cfg.sparsity}
        )
    model, spec, t_cfg, data = load_teacher(cfg)
    data_dir = cfg.data_dir if cfg.data else (cfg.data_dir or t_cfg.get("data_dir"))
    layers = (cfg.include_first, cfg.include_last)
    teacher = Teacher(
        model, spec, data.name, data_dir, data.input_shape, layers, *robust_loss(cfg, data)
    )
    strategy: BudgetStrategy = (
        JointStrategy(budget, teacher, measures)
        if isinstance(budget, JointBudget)
        else make_strategy(budget, teacher, measures)
    )
    strategy.prepare()
    out = Path(out)
    last = train_to_budget(cfg, out, strategy, eval_attacks, eval_suite)
    last.metrics["budget"] = strategy.record(last.result, last.measured, last.tries)
    if last.measured > budget.limit:
        strategy.warn_over(last.measured)
    if isinstance(strategy, FlashStrategy):
        strategy.warn_refused()
    write_json(out / "metrics.json", last.metrics)
    return last.metrics


def robust_loss(cfg: CompressConfig, data: Any) -> Tuple[Sensitivity, Recovery]:
    """What the per-layer width search spends: the robust loss on a fixed batch of training
    images, and a candidate's short fine-tune on the next ones (PGD at the run's eps, steps)."""
    eps = eps_or_default(cfg.eps)
    x, y = sensitivity_batch(data.x_train, data.y_train, cfg.seed)
    rx, ry = recovery_batch(data.x_train, data.y_train, cfg.seed)
    return Sensitivity(x, y, eps, cfg.steps, cfg.seed), Recovery(rx, ry, eps, cfg.steps, cfg.seed)


def train_to_budget(
    cfg: CompressConfig,
    out: Path,
    strategy: BudgetStrategy,
    eval_attacks: Sequence[Any],
    eval_suite: Optional[str],
) -> Trained:
    """Search, train the student of that structure into ``out`` and measure it (in the
    budget's unit). A student over the limit is searched and trained once more when
    ``strategy.widen`` has corrected what the search aims at (False: no retry)."""
    tries: List[Dict[str, Any]] = []
    for attempt in range(1, TRIES + 1):
        aim = strategy.aim()
        result = strategy.search()
        if attempt > 1:
            shutil.rmtree(out, ignore_errors=True)
        metrics = compress_run(
            student_config(cfg, result), out, eval_attacks=eval_attacks, eval_suite=eval_suite
        )
        measured = strategy.measure_student(out)
        tries.append({**aim, "predicted": result.value, "measured": measured})
        over = measured > strategy.budget.limit
        if not over or attempt == TRIES or not strategy.widen(result, measured):
            break
    return Trained(metrics, result, measured, tries)


def student_config(cfg: CompressConfig, result: SearchResult) -> CompressConfig:
    """The student's config: structured with per-layer ranking at the found channel fraction
    (and, for searched per-layer widths, each layer's own fraction: ``layer_sparsity``), or (a
    flash budget met by zeroed weights) unstructured, globally ranked, at the found
    sparsity."""
    if result.structure == WEIGHTS:
        return dataclasses.replace(
            cfg, structured=False, scope=Scope.GLOBAL, sparsity=result.weight_sparsity
        )
    return dataclasses.replace(
        cfg,
        structured=True,
        scope=Scope.LAYER,
        sparsity=result.channel_sparsity,
        layer_sparsity=result.layer_sparsity(),
    )
