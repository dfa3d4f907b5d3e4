"""``check(paths, expects, baseline=...)``: gate measured results, one :class:`Outcome` per
model x target x gate, in a :class:`CheckResult` (JSON, JUnit and Markdown from it:
:mod:`robustedge.gates.report`).

A gate applies to every subject whose kind holds its metric (board results, the host's PyTorch
evaluation, a bundle's manifest). A subject that should hold the metric but does not (e.g.
``square`` when the bench skipped Square) fails with "not measured". Bad input is a
:class:`~robustedge.gates.expr.GateError` (the command's exit 2): an unknown metric, an
unparsable gate, a missing file, a gate no input can answer, or an absolute latency gate on an
emulated target (emulated time says nothing about a board: gate ``p50_vs_teacher`` there).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from robustedge.gates.expr import Gate, GateError, parse_gate
from robustedge.gates.metrics import METRICS
from robustedge.gates.regression import compare
from robustedge.gates.result import CheckResult, Outcome
from robustedge.gates.spec import GatesSpec, RegressionConfig
from robustedge.gates.subjects import Subject, collect, read_json_file

logger = logging.getLogger(__name__)


def recipe_gates(path: Path) -> Optional[GatesSpec]:
    """The ``gates:`` a recipe output folder recorded (``recipe.json``), else None."""
    rec = path / "recipe.json"
    if not (path.is_dir() and rec.is_file()):
        return None
    data = read_json_file(rec, "recipe record")
    raw = data.get("gates") if isinstance(data, dict) else None
    return _spec(raw, str(rec)) if raw else None


def _spec(raw: Any, where: str) -> GatesSpec:
    try:
        return GatesSpec.from_mapping(raw)
    except ValueError as e:
        raise GateError(f"{where}: gates: {e}") from None


def load_gates_file(path: Path) -> GatesSpec:
    """``--gates FILE``: a recipe YAML (its ``gates:`` section) or a YAML holding only the
    section's keys."""
    from robustedge.io import read_yaml

    try:
        data = read_yaml(path)
    except FileNotFoundError:
        raise GateError(f"no such gates file: {path}") from None
    if isinstance(data, dict) and "gates" in data:
        data = data["gates"]
    return _spec(data, str(path))


def check(
    paths: Sequence[Any],
    expects: Sequence[str] = (),
    baseline: Optional[Any] = None,
    gates: Optional[GatesSpec] = None,
    regression: Optional[RegressionConfig] = None,
) -> CheckResult:
    """Gate the results under ``paths``: ``expects`` (gate expressions, applied to every
    model and target), ``gates`` (a spec with per-model/per-target overrides; a recipe
    folder's own ``gates:`` are added), and, with ``baseline``, the regression gates
    (``regression``: thresholds; default the spec's, else :class:`RegressionConfig`'s)."""
    extra = [parse_gate(e) for e in expects]
    specs = [gates] if gates is not None else []
    specs += [s for s in (recipe_gates(Path(p)) for p in paths) if s is not None]
    if not extra and not specs and baseline is None:
        raise GateError(
            "nothing to check: give --expect, --gates, --baseline or a recipe with gates:"
        )
    subjects = collect(paths)
    result = CheckResult(subjects=len(subjects))
    used: Dict[str, bool] = {g.text: False for g in extra}
    for s in subjects:
        for g in applicable(s, specs, extra):
            used[g.text] = True
            result.outcomes.append(evaluate(s, g))
    unused = [t for t, hit in used.items() if not hit]
    if unused:
        raise GateError(f"gate '{unused[0]}' applies to none of the inputs ({_kinds(subjects)})")
    if baseline is not None:
        cfg = regression or next((s.regression_config() for s in specs if s.regression), None)
        compare(subjects, collect([baseline]), cfg or RegressionConfig(), result)
    return result


def _kinds(subjects: Sequence[Subject]) -> str:
    kinds = sorted({s.kind for s in subjects})
    return "they hold " + ", ".join(kinds) + " measurements" if kinds else "nothing found"


def applicable(s: Subject, specs: Sequence[GatesSpec], extra: Sequence[Gate]) -> List[Gate]:
    """The gates for subject ``s``: each spec resolved for its model and target, plus the
    command line's; only those whose metric this kind of subject holds."""
    gates: List[Gate] = []
    for spec in specs:
        for items in spec.for_subject(s.model, s.target).values():
            gates += items
    gates += list(extra)
    return [g for g in gates if holds_metric(s, g.metric)]


def holds_metric(s: Subject, metric: str) -> bool:
    """Whether subjects of ``s``'s kind carry ``metric`` (p50_vs_teacher: board subjects)."""
    m = METRICS[metric]
    return s.kind == "board" if m.relative else getattr(m, s.kind, None) is not None


def evaluate(s: Subject, g: Gate) -> Outcome:
    """One gate on one subject (GateError for absolute latency on an emulated target)."""
    metric = METRICS[g.metric]
    if metric.absolute_latency and s.emulated:
        raise GateError(
            f"gate '{g.text}' on {s.where}: absolute latency on an emulated target says "
            "nothing about a board; gate p50_vs_teacher (relative to the teacher on the same "
            "target), macs, flash_kb or model_kb there instead"
        )
    m = s.values.get(g.metric)
    if m is None:
        why = "no teacher on this target in this run" if metric.relative else ""
        return Outcome(s.model, s.target, s.format, g.text, g.metric, None, g.threshold, False, why)
    return Outcome(
        s.model,
        s.target,
        s.format,
        g.text,
        g.metric,
        m.value,
        g.threshold,
        g.holds(m.value),
        m.label + (f", n={m.n}" if m.n else ""),
    )
