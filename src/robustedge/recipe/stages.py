"""The stages of a recipe (teacher, students, evaluation, export, boards) and `run_recipe`.

Layout under ``OUT``::

    recipe.json                resolved recipe          summary.json   what ran, notes
    teacher/                   run folder (+ eval.json, export/, device/<target>/results.json)
    students/<name>-s<sp>/     one run folder per compression setting and sparsity
    stages/<id>/stage.json     cache records (see robustedge.recipe.runner)
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from robustedge.codec import DEFAULT_CODEC
from robustedge.device.board.config import BenchConfig
from robustedge.errors import RobustEdgeError
from robustedge.export.config import ExportConfig
from robustedge.io import read_json, write_json
from robustedge.recipe.executors import ExecutorSpec, run_stages
from robustedge.recipe.model_card import write_model_cards
from robustedge.recipe.runner import (
    Stage,
    StageResult,
    StageRunner,
    digest_of,
    file_sha256,
    files_under,
)
from robustedge.recipe.schema import Recipe, TargetSpec
from robustedge.training.evaluate import EvalPlan

logger = logging.getLogger(__name__)
TRAIN_FILES = ("model.safetensors", "model.json", "config.yaml", "metrics.json")
STUDENT_FILES = (*TRAIN_FILES, "masks.safetensors")
SUMMARY = "summary.json"


def run_recipe(
    recipe: Recipe,
    out: Path,
    on_result: Optional[Callable[[StageResult], None]] = None,
    on_start: Optional[Callable[[str], None]] = None,
    executor: Optional[ExecutorSpec] = None,
) -> Dict[str, Any]:
    """Execute ``recipe`` into ``out``, reusing every stage still valid; returns the summary
    (also written to ``out/summary.json``). ``on_start(stage id)`` / ``on_result(result)``
    report progress. ``executor``: here in order (default; device targets benched
    concurrently) or Ray tasks (:mod:`robustedge.recipe.executors`); the outputs, cache and
    summary do not depend on it."""
    out = Path(out)
    stages, runs, notes = plan(recipe, out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "recipe.json", recipe.to_dict())
    results = run_stages(StageRunner(out, on_result, on_start), stages, executor)
    write_model_cards(out, runs)  # from the JSON, refreshed on every run (cached stages too)
    summary = {
        "schema": "robustedge.recipe.summary/1",
        "recipe": recipe.name,
        "runs": [as_trained(out, r) for r in runs],
        "stages": [
            {k: v for k, v in asdict(r).items() if k not in ("outputs", "digest")} for r in results
        ],
        "notes": notes
        + [f"{r.id}: {r.note}" for r in results if r.status == "skipped" and r.note not in notes],
    }
    write_json(out / SUMMARY, summary)
    if recipe.gates is not None:  # read back from the written folder, as `robustedge check`
        from robustedge.recipe.gating import apply_gates

        summary["gates"] = apply_gates(out)
        write_json(out / SUMMARY, summary)
    return summary


def as_trained(out: Path, run: Dict[str, Any]) -> Dict[str, Any]:
    """The plan's entry for ``run`` corrected by its finished metrics: a budget student's
    kind (channels removed or weights zeroed) is only known once its search has run."""
    metrics = out / run["path"] / "metrics.json"
    if run.get("role") != "student" or not metrics.is_file():
        return run
    try:
        structured = read_json(metrics).get("structured")
    except (RobustEdgeError, AttributeError):  # unreadable or not an object: keep the plan's
        return run
    return {**run, "structured": bool(structured)} if structured is not None else run


def plan(recipe: Recipe, out: Path) -> Tuple[List[Stage], List[Dict[str, Any]], List[str]]:
    """All stages in execution order, the run index, and up-front notes. Checks that
    non-optional targets are usable before any work starts."""
    if recipe.teacher.train is not None:
        from robustedge.data import load_dataset

        load_dataset(recipe.data.name, recipe.data.data_dir)  # missing files: error now
    targets, notes = _check_targets(recipe)
    teacher = out / "teacher"
    stages = [_teacher_stage(recipe, teacher)]
    runs = [{"name": "teacher", "path": "teacher", "role": "teacher", "sparsity": 0.0}]
    stages += _downstream(recipe, "teacher", teacher, targets)
    for name, spec, sparsity in recipe.students():
        run = out / "students" / name
        if spec.budget is not None:  # a structured student searched to meet the budget
            opts = {**spec.options, "budget": asdict(spec.budget)}
        else:
            opts = {**spec.options, "sparsity": sparsity}
        stages.append(
            Stage(
                f"student-{name}",
                "compress",
                opts,
                lambda run=run, opts=opts: _compress(teacher, run, opts),
                lambda run=run: [p for p in files_under(run, STUDENT_FILES) if p.exists()],
                upstream=("teacher",),
            )
        )
        runs.append(
            {
                "name": name,
                "path": f"students/{name}",
                "role": "student",
                "method": opts.get("method", "prox"),
                "structured": bool(opts.get("structured", False) or spec.budget is not None),
                "sparsity": sparsity,
                **({"budget": opts["budget"]} if spec.budget is not None else {}),
            }
        )
        stages += _downstream(recipe, f"student-{name}", run, targets)
    return stages, runs, notes


def _teacher_stage(recipe: Recipe, run: Path) -> Stage:
    t = recipe.teacher
    if t.train is not None:
        return Stage(
            "teacher",
            "train",
            dict(t.train),
            lambda: _train(run, t.train),
            lambda: files_under(run, TRAIN_FILES),
        )
    src = Path(t.load)
    files = [src / n for n in (*STUDENT_FILES,) if (src / n).is_file()]
    if not all((src / n).is_file() for n in ("model.safetensors", "model.json", "config.yaml")):
        raise RobustEdgeError(f"teacher.load: {src} is not a robustedge run folder")
    source = {p.name: file_sha256(p) for p in files}
    return Stage(
        "teacher",
        "load",
        {"load": str(src.resolve()), "source": digest_of(source)},
        lambda: _copy_run(src, run, [p.name for p in files]),
        lambda: files_under(run, [p.name for p in files]),
    )


def _downstream(
    recipe: Recipe, model_id: str, run: Path, targets: List[Tuple[TargetSpec, Optional[str]]]
) -> List[Stage]:
    """Evaluation, export and one bench per target for the model of stage ``model_id``."""
    name = model_id.split("-", 1)[1] if model_id.startswith("student-") else model_id
    ev = recipe.evaluate
    stages = []
    if ev.runs_anything():
        cfg = {**ev.to_dict(), "seed": recipe.seed}
        if ev.suite is None:
            del cfg["suite"]  # evaluations cached before suites existed stay valid
        stages.append(
            Stage(
                f"eval-{name}",
                "evaluate",
                cfg,
                lambda: _evaluate(run, recipe),
                lambda: [run / "eval.json"],
                upstream=(model_id,),
            )
        )
    if recipe.export is None:
        return stages
    export_cfg = recipe.export.to_dict()  # the recipe's seed included (ExportConfig.seed)
    if export_cfg["eval_images"] == ExportConfig().eval_images:
        del export_cfg["eval_images"]  # exports cached before the setting existed stay valid
    stages.append(
        Stage(
            f"export-{name}",
            "export",
            export_cfg,
            lambda: _export(run, recipe),
            lambda: files_under(run / "export"),
            upstream=(model_id,),
        )
    )
    for target, skip in targets:
        where = run / "device" / target.slug
        cfg = {**bench_config(recipe, target).to_dict(), "target": asdict(target)}
        cfg["bundle_codec"] = DEFAULT_CODEC  # a new bundle layout re-benches cached boards
        cfg["board_results"] = "worst-case/1"  # results with the on-board worst case
        stages.append(
            Stage(
                f"device-{name}-{target.slug}",
                "bench",
                cfg,
                lambda t=target, w=where: _bench(run, w, t, recipe),
                lambda w=where: [w / "results.json"],
                upstream=(f"export-{name}",),
                optional_note=skip,
                lock=f"target:{target.slug}",  # one bench at a time per board
            )
        )
    return stages


def _check_targets(recipe: Recipe) -> Tuple[List[Tuple[TargetSpec, Optional[str]]], List[str]]:
    """(target, skip note or None) for every device target; a non-optional target that
    cannot work here is an error now, before any training."""
    if recipe.devices is None:
        return [], []
    out, notes = [], []
    for t in recipe.devices.targets:
        try:
            _make_target(t)
            out.append((t, None))
        except RobustEdgeError as e:
            if not t.optional:
                raise RobustEdgeError(f"device target {t.target}: {e}") from None
            note = f"optional target {t.target} skipped: {e}"
            notes.append(note)
            out.append((t, note))
    return out, notes


def _make_target(t: TargetSpec) -> Any:
    from robustedge.device.host.targets import make_target

    opts = ["-F", t.ssh_config] if t.ssh_config else []
    for o in t.ssh_options:
        opts += ["-o", o]
    return make_target(t.target, ssh_options=opts, python=t.python)


def _train(run: Path, cfg: Dict[str, Any]) -> None:
    from robustedge.manifold import load_manifold
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    shutil.rmtree(run, ignore_errors=True)
    tc = TrainConfig.from_dict(dict(cfg))
    train_run(tc, run, manifold=load_manifold(tc.manifold, tc.data_dir))


def _copy_run(src: Path, run: Path, names: List[str]) -> None:
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    for n in names:
        shutil.copy2(src / n, run / n)


def _compress(teacher: Path, run: Path, opts: Dict[str, Any]) -> None:
    """The student stage: a sparsity or (``opts["budget"]``, a BudgetSpec's fields) a budget,
    chosen by :func:`robustedge.recipe.students.compress_student`."""
    from robustedge.compress import CompressConfig
    from robustedge.compress.budget import Budget
    from robustedge.recipe.students import compress_student

    shutil.rmtree(run, ignore_errors=True)
    opts = dict(opts)
    budget = opts.pop("budget", None)
    cfg = CompressConfig.from_keys(teacher=str(teacher), **opts)
    compress_student(cfg, run, None if budget is None else Budget(**budget))


def eval_plan(recipe: Recipe) -> EvalPlan:
    """The :class:`~robustedge.training.evaluate.EvalPlan` of the recipe's ``evaluate``."""
    return recipe.evaluate


def eval_specs(recipe: Recipe) -> List[Any]:
    """The AttackSpecs of the recipe's ``evaluate`` section."""
    return eval_plan(recipe).specs()


def _evaluate(run: Path, recipe: Recipe) -> None:
    from robustedge.manifold import load_manifold
    from robustedge.training.run import eval_run

    (run / "eval.json").unlink(missing_ok=True)
    plan = eval_plan(recipe)
    resources = {"manifold": load_manifold(plan.manifold)} if plan.needs_manifold else None
    eval_run(run, plan, seed=recipe.seed, resources=resources)


def _export(run: Path, recipe: Recipe) -> None:
    from robustedge.export import export_run

    export_run(run, recipe.export)


def bench_config(recipe: Recipe, target: TargetSpec) -> BenchConfig:
    """What ``target`` measures: the recipe's ``devices:`` settings, its bench format, and the
    target's own overrides."""
    cfg = recipe.devices.bench(target)
    return cfg.replace(format=recipe.bench_format())


def _bench(run: Path, where: Path, target: TargetSpec, recipe: Recipe) -> None:
    from robustedge.device.host.bundle import build_bundle

    cfg = bench_config(recipe, target)
    shutil.rmtree(where, ignore_errors=True)
    bundle = build_bundle(run, where / "bundle", [cfg.format])
    results = _make_target(target).bench(bundle, cfg)
    results["run"] = run.name
    write_json(where / "results.json", results)
