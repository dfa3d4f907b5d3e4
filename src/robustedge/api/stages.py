"""One function per stage. The CLI commands call these; so can a user's own script.

Each takes a config dataclass (or a mapping, or nothing) plus keyword settings on top, Python
objects where they help (an ``nn.Module``, a :class:`~robustedge.data.Dataset` or torch data
sets, a Manifold) as well as run folders, and returns a typed result
(:mod:`robustedge.api.results`) holding the fields of the JSON file the stage wrote.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

from robustedge.api.inputs import DataLike, ModelLike, build_config, data_name, model_name
from robustedge.api.inputs import run_model as use_run_model
from robustedge.api.results import (
    BenchResult,
    BundleResult,
    CompressResult,
    EvalResult,
    ExportResult,
    RecipeResult,
    ReportResult,
    TrainResult,
)
from robustedge.data import Dataset, load_dataset
from robustedge.errors import RobustEdgeError
from robustedge.gates.result import CheckResult
from robustedge.io import PathLike, write_json
from robustedge.manifold import load_manifold
from robustedge.models.instance import check_output
from robustedge.runs import LoadedRun
from robustedge.runs import load_run as load_run_folder
from robustedge.training.config import TrainConfig
from robustedge.training.evaluate import EvalPlan

__all__ = [
    "bench",
    "bundle",
    "bundle_model",
    "compress",
    "evaluate",
    "export",
    "load_manifold",
    "load_run",
    "report",
    "run_recipe",
    "train",
]


def train(
    config: Union[TrainConfig, Mapping[str, Any], None] = None,
    *,
    out: PathLike,
    model: ModelLike = None,
    data: Optional[DataLike] = None,
    resume: bool = False,
    progress: bool = False,
    suite: Optional[str] = None,
    manifold: Any = None,
    download: bool = False,
    **settings: Any,
) -> TrainResult:
    """Train a (robust) model into the run folder ``out`` (what `robustedge train` does).

    ``config``: a :class:`TrainConfig` (or mapping); ``settings``: its fields by name, on top.
    ``model``: a registered name, ``module.path:factory``, or your own ``nn.Module`` object
    (registered under its class name; a deep copy is trained). ``data``: a registered name
    (``"imagefolder"`` with ``data_dir=ROOT``...), a :class:`~robustedge.data.Dataset`, or a
    ``(train, test)`` pair of torch Datasets / DataLoaders. ``suite``: also evaluate under an
    attack suite. ``manifold``: the Manifold object on-manifold adversaries use (default:
    loaded from the ``manifold`` setting). ``download``: fetch MNIST / Fashion-MNIST /
    CIFAR-10 into ``data_dir`` (default $ROBUSTEDGE_DATA_DIR or ~/.cache/robustedge/data)
    first, each archive's sha256 checked (:func:`robustedge.data.download`)."""
    from robustedge.data import download as fetch
    from robustedge.training.run import train_run

    given = {"model": model_name(model), "data": data_name(data)}
    cfg = build_config(TrainConfig, config, {**settings, **_set(given)})
    if download:
        where = None if cfg.data_dir is None else Path(cfg.data_dir)
        cfg = cfg.replace(data_dir=str(fetch(cfg.data, where)))
    if model is not None and not isinstance(model, str):
        d = load_dataset(cfg.data, cfg.data_dir)
        check_output(model, d.input_shape, d.num_classes)
    if manifold is None:
        manifold = load_manifold(cfg.manifold, cfg.data_dir)
    metrics = train_run(cfg, Path(out), resume, progress, manifold=manifold, suite=suite)
    return TrainResult.from_json(metrics, run=Path(out))


def evaluate(
    run: PathLike,
    plan: Union[EvalPlan, Mapping[str, Any], None] = None,
    *,
    seed: int = 0,
    model: ModelLike = None,
    data: Optional[DataLike] = None,
    manifold: Any = None,
    **settings: Any,
) -> EvalResult:
    """Clean and robust accuracy of ``run`` on its test split (what `robustedge eval` does);
    writes ``RUN/eval.json``. ``plan``: an :class:`EvalPlan` (or mapping) with ``settings``
    on top. ``model``: your nn.Module again when the run's architecture is your own;
    ``data``: the data again when it was yours (see :func:`train`)."""
    from robustedge.training.run import eval_run

    use_run_model(run, model)
    name = data_name(data)
    cfg = build_config(EvalPlan, plan, settings)
    if cfg.needs_manifold and manifold is None:
        manifold = load_manifold(cfg.manifold)
    resources = {"manifold": manifold} if cfg.needs_manifold else None
    dataset = load_dataset(name) if name is not None else None
    result = eval_run(Path(run), cfg, seed=seed, data=dataset, resources=resources)
    return EvalResult.from_json(result, path=Path(run) / "eval.json")


def compress(
    config: Any = None,
    *,
    out: PathLike,
    teacher_model: ModelLike = None,
    data: Optional[DataLike] = None,
    budget: Any = None,
    target: Optional[str] = None,
    attacks: Optional[Sequence[Any]] = None,
    suite: Optional[str] = None,
    resume: bool = False,
    measures: Any = None,
    **settings: Any,
) -> CompressResult:
    """Prune a teacher run into a robust student run folder ``out`` (what `robustedge
    compress` does). ``config``: a :class:`~robustedge.compress.CompressConfig` (or flat
    mapping); ``settings``: its keys (``teacher=``, ``method=``, ``sparsity=``, and the
    method's own options) on top. ``budget``: ``"macs=2M"`` / ``"flash_kb=64"`` /
    ``"latency_ms=5"`` (or a Budget) in place of a sparsity, ``target``: where a latency
    budget is measured. ``attacks`` / ``suite``: the student's evaluation. ``teacher_model``
    / ``data``: your nn.Module and data again when the teacher was trained on them."""
    from robustedge.compress import CompressConfig
    from robustedge.recipe.students import compress_student

    name = data_name(data)
    cfg = build_config(CompressConfig, config, {**settings, **_set({"data": name})})
    use_run_model(cfg.teacher, teacher_model)
    metrics = compress_student(
        cfg, Path(out), budget, target, attacks, suite, resume=resume, measures=measures
    )
    return CompressResult.from_json(metrics, run=Path(out))


def export(
    run: PathLike,
    config: Any = None,
    *,
    out: Optional[PathLike] = None,
    model: ModelLike = None,
    data: Optional[DataLike] = None,
    calib_x: Any = None,
    **settings: Any,
) -> ExportResult:
    """Export ``run`` to ONNX / TFLite (``formats=...``), each file checked against PyTorch
    (what `robustedge export` does); writes ``export.json`` and ``ledger.json`` to ``out``
    (default ``RUN/export``). ``model`` / ``data``: your nn.Module and data (under the name
    the run recorded) again when they were your own; ``calib_x``: the int8 calibration inputs
    (N x C x H x W float32)."""
    from robustedge.export import export_run
    from robustedge.export.config import ExportConfig

    cfg = build_config(ExportConfig, config, settings)
    data_name(data)  # registered under its name, which the run's config records
    rep = export_run(run, cfg, out=out, calib_x=calib_x, model=model)
    return ExportResult.from_json(
        rep.manifest, out=rep.out, ledger=rep.ledger, passed=rep.passed, failures=rep.failures
    )


def bundle(run: PathLike, out: PathLike, config: Any = None, **settings: Any) -> BundleResult:
    """Pack the export of ``run`` into a self-contained bundle at ``out`` (a folder, or a
    file ending in .tar); what `robustedge bundle` does. ``config``: a ``BundleConfig`` (or
    mapping), ``settings`` (``formats=``, ``codec=``) on top."""
    from robustedge.device.host.bundle import BundleConfig, build_bundle

    cfg = build_config(BundleConfig, config, _tuples(settings))
    return _bundle_result(build_bundle(run, out, cfg), cfg)


def bundle_model(
    model_file: PathLike,
    out: PathLike,
    data: DataLike,
    config: Any = None,
    *,
    data_dir: Optional[str] = None,
    samples: Optional[int] = None,
    seed: int = 0,
    eps: Optional[float] = None,
    source_model: Any = None,
    **settings: Any,
) -> BundleResult:
    """Pack an existing ``.tflite`` file (made by robustedge or not) with the test split of
    ``data`` into a bundle at ``out`` for :func:`bench`. ``data``: a registered name
    (``"imagefolder"`` with ``data_dir=ROOT``: ROOT/test/<class>/*.png), a
    :class:`~robustedge.data.Dataset` or a ``(train, test)`` pair of torch data sets;
    ``samples``: a fixed subset drawn with ``seed``. The robust part is what the board does
    without gradients: Square with Linf budget ``eps`` (default: the evaluation default) and,
    only when ``source_model`` (an nn.Module, e.g. the float model the file came from) is
    given, a PGD transfer set crafted on it; the board's results name the attacks that ran
    (``BenchResult.extra["worst_case"]["attacks"]``). ``config`` / ``settings``: a
    ``BundleConfig`` (``codec=``)."""
    from robustedge.device.host.bare import bundle_model_file
    from robustedge.device.host.bundle import BundleConfig

    cfg = build_config(BundleConfig, config, _tuples(settings))
    name = data_name(data)
    dataset = load_dataset(name, data_dir) if name is not None else None
    if dataset is None:
        raise RobustEdgeError("bundle_model needs data: the images the board is measured on")
    path = bundle_model_file(
        model_file, out, dataset, cfg, samples=samples, seed=seed, eps=eps,
        source_model=source_model,
    )  # fmt: skip
    return _bundle_result(path, cfg)


def _bundle_result(path: Path, cfg: Any) -> BundleResult:
    """The result of a written bundle (a .tar: the formats asked for, files not counted)."""
    from robustedge.device.board.bundle_format import read_manifest

    if path.is_dir():
        m = read_manifest(path)
        return BundleResult(path, list(m["formats"]), len(m["files"]))
    return BundleResult(path, list(cfg.formats), 0)


def bench(
    bundle_path: PathLike,
    target: str = "local",
    config: Any = None,
    *,
    out: Optional[PathLike] = None,
    ssh_options: Sequence[str] = (),
    python: Optional[str] = None,
    **settings: Any,
) -> BenchResult:
    """Copy a bundle (folder or .tar) to ``target`` (``local``, ``ssh://user@host``,
    ``qemu-aarch64``, ...), run it there and return its measurements (what `robustedge bench`
    does); ``out``: also write them as JSON there. ``config``: a ``BenchConfig`` (or mapping)
    with ``settings`` (``runs=``, ``square_n=``...) on top."""
    from robustedge.device.board.bundle_format import verify_bundle
    from robustedge.device.board.config import BenchConfig
    from robustedge.device.host.bundle import unpack
    from robustedge.device.host.targets import make_target

    cfg = build_config(BenchConfig, config, settings)
    with tempfile.TemporaryDirectory() as tmp:
        b = Path(bundle_path)
        if b.is_file() and b.suffix == ".tar":
            b = unpack(b, tmp)
        verify_bundle(b)
        results = make_target(target, ssh_options=list(ssh_options), python=python).bench(b, cfg)
    if out is not None:
        write_json(Path(out), results)
    return BenchResult.from_json(results, path=None if out is None else Path(out))


def run_recipe(
    recipe: Any,
    out: Optional[PathLike] = None,
    *,
    device: Optional[str] = None,
    executor: Any = None,
    on_start: Optional[Callable[[str], None]] = None,
    on_result: Optional[Callable[[Any], None]] = None,
) -> RecipeResult:
    """Run a recipe (a YAML path or a loaded Recipe) into ``out`` (default
    ``runs/<recipe name>``), redoing only stages whose inputs changed (what `robustedge run`
    does). ``device``: train here; ``executor``: an ``ExecutorSpec`` (default: in order)."""
    from robustedge.recipe import load_recipe
    from robustedge.recipe.stages import run_recipe as run_stages

    r = recipe if hasattr(recipe, "students") else load_recipe(Path(recipe))
    if device is not None:
        r = r.with_device(device)
    where = Path(out) if out is not None else Path("runs") / r.name
    summary = run_stages(r, where, on_result=on_result, on_start=on_start, executor=executor)
    return RecipeResult.from_json(summary, out=where)


def report(
    runs: Union[PathLike, Sequence[PathLike]],
    out: PathLike = "report.html",
    title: Optional[str] = None,
) -> ReportResult:
    """HTML + Markdown report on run folders / recipe outputs, drawn from their JSON files
    (what `robustedge report` does)."""
    from robustedge.report import build_report

    if isinstance(runs, (str, os.PathLike)):
        paths = [Path(runs)]
    else:
        paths = [Path(p) for p in runs]
    rep = build_report(paths, Path(out), title)
    return ReportResult(rep.html_path, rep.md_path, rep.summary)


def check(
    results: Union[PathLike, Sequence[PathLike]],
    expect: Union[str, Sequence[str]] = (),
    *,
    gates: Any = None,
    baseline: Optional[PathLike] = None,
    **thresholds: Any,
) -> CheckResult:
    """Gate results for CI (what `robustedge check` does): ``results`` (board results JSON
    files, bundles, run or recipe folders), ``expect`` (gate expressions such as
    ``"clean>=0.97"``, applied to every model and target), ``gates`` (a YAML file with a
    ``gates:`` section, or a loaded spec), ``baseline`` (the last accepted results: regression
    gates) and ``thresholds`` (:class:`~robustedge.gates.spec.RegressionConfig` fields replacing
    the gates file's). Returns a :class:`~robustedge.gates.result.CheckResult`: ``.passed``,
    ``.failures`` (each with its one ``.line``), ``.to_dict()``; the CLI exits 1 when it fails.
    Bad input raises :class:`~robustedge.errors.RobustEdgeError`."""
    from robustedge.gates import check as run_gates
    from robustedge.gates import load_gates_file
    from robustedge.gates.spec import RegressionConfig

    paths = [results] if isinstance(results, (str, os.PathLike)) else list(results)
    expects = [expect] if isinstance(expect, str) else list(expect)
    spec = load_gates_file(Path(gates)) if isinstance(gates, (str, os.PathLike)) else gates
    regression = None
    if thresholds:
        base = spec.regression_config() if spec is not None else RegressionConfig()
        regression = build_config(RegressionConfig, base, thresholds)
    return run_gates(paths, expects, baseline=baseline, gates=spec, regression=regression)


def load_run(
    run: PathLike, model: ModelLike = None, data: Union[Dataset, str, None] = None
) -> LoadedRun:
    """A finished run folder loaded and checked: ``.model`` (eval mode, CPU), ``.spec``,
    ``.config``, ``.data``. ``model``: your nn.Module again when the architecture is your own
    (its weights are replaced by the run's); ``data``: a Dataset or name in place of the
    run's own."""
    dataset = load_dataset(data) if isinstance(data, str) else data
    return load_run_folder(run, model=model, data=dataset)


def _set(values: Mapping[str, Any]) -> Dict[str, Any]:
    """The entries that were given (not None)."""
    return {k: v for k, v in values.items() if v is not None}


def _tuples(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """Lists as tuples (config fields hold tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
