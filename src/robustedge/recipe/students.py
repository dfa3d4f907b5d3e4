"""The one place that chooses between a sparsity and a budget for a student, used by
``robustedge compress`` and by the recipe's student stages alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from robustedge.compress import CompressConfig, compress_run
from robustedge.compress.budget import (
    AnyBudget,
    Budget,
    BudgetMeasures,
    JointBudget,
    Quantity,
    compress_to_budget,
    parse_budget,
)
from robustedge.errors import RobustEdgeError
from robustedge.recipe.budget_measures import BoardMeasures, refuse_emulated


def resolve_budget(budget: Union[str, AnyBudget], target: Optional[str] = None) -> AnyBudget:
    """``budget`` as a :class:`Budget` or (several limits) a :class:`JointBudget` (a string is
    parsed with ``target``: ValueError, one line); a latency budget on an emulated target is
    refused now, before any training."""
    if isinstance(budget, (Budget, JointBudget)):
        if target is not None and target != budget.target:
            raise ValueError(f"the budget names target {budget.target!r}, not {target!r}")
        parsed = budget
    else:
        parsed = parse_budget(budget, target)
    for b in parsed.budgets if isinstance(parsed, JointBudget) else (parsed,):
        if b.quantity is Quantity.LATENCY_MS:
            refuse_emulated(str(b.target))
    return parsed


def compress_student(
    cfg: CompressConfig,
    out: Path,
    budget: Union[str, AnyBudget, None] = None,
    target: Optional[str] = None,
    eval_attacks: Optional[Sequence[Any]] = None,
    eval_suite: Optional[str] = None,
    resume: bool = False,
    measures: Optional[BudgetMeasures] = None,
) -> Dict[str, Any]:
    """Compress ``cfg.teacher`` into the student run folder ``out``: at ``cfg.sparsity``
    (:func:`compress_run`) or, given a ``budget`` (``"flash_kb=64"`` or a :class:`Budget`;
    ``target``: where a latency budget is measured), the widest structure that meets it
    (:func:`compress_to_budget`, measured with ``measures``, by default on real exports and
    boards: :class:`BoardMeasures`). ``eval_attacks`` (default: compress's own) and
    ``eval_suite`` evaluate the student. Returns its metrics."""
    kw: Dict[str, Any] = {"eval_suite": eval_suite}
    if eval_attacks is not None:
        kw["eval_attacks"] = eval_attacks
    if budget is None:
        if target is not None:
            raise RobustEdgeError("--budget-target needs --budget latency_ms=...")
        return compress_run(cfg, out, resume=resume, **kw)
    if resume:
        raise RobustEdgeError("--resume is not supported with --budget (each try is short)")
    parsed = resolve_budget(budget, target)
    return compress_to_budget(cfg, parsed, out, measures or BoardMeasures(), **kw)
