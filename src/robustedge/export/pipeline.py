"""`export_run`: a run folder -> checked ONNX / TFLite artifacts, export.json and ledger.json.

Everything is built in a staging folder that replaces ``RUN/export`` only when every stage
and the parity gate pass. On failure the staging content (artifacts, reports, the onnx2tf
log) is kept in ``RUN/export.failed`` for inspection and a one-line RobustEdgeError is raised;
``RUN/export`` is never left half-written.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from robustedge.data import seeded_subset
from robustedge.errors import RobustEdgeError
from robustedge.export import builders, evalsets
from robustedge.export.config import ExportConfig
from robustedge.export.context import RunContext
from robustedge.export.formats import INTERPRETERS, ROOT, is_quantized
from robustedge.export.ledger import build_ledger
from robustedge.export.parity import Margins, failure_message, parity
from robustedge.hashing import sha256_file
from robustedge.io import PathLike, staging_dir, write_json

logger = logging.getLogger(__name__)
__all__ = ["ExportConfig", "ExportReport", "export_run"]


@dataclass
class ExportReport:
    """What `export_run` produced: the folder, export.json's content and the ledger."""

    out: Path
    manifest: Dict[str, Any]
    ledger: Dict[str, Any]
    passed: bool = True
    failures: List[str] = field(default_factory=list)

    @property
    def artifacts(self) -> Dict[str, Any]:
        return self.manifest["artifacts"]

    def path(self, fmt: str) -> Path:
        return self.out / self.artifacts[fmt]["file"]


def export_run(
    run_dir: PathLike,
    cfg: ExportConfig = ExportConfig(),
    out: Optional[PathLike] = None,
    *,
    calib_x: Optional[np.ndarray] = None,
    model: Any = None,
) -> ExportReport:
    """Export the model of ``run_dir`` as ``cfg`` says, into ``out`` (default ``RUN/export``).

    ``calib_x`` (N x C x H x W float32) replaces the default calibration draw of
    ``cfg.calib_samples`` training inputs (``cfg.calib_adv_fraction`` of them PGD-perturbed).
    The transfer set's attack is recorded in export.json. ``model`` may be given when the
    run's architecture cannot be rebuilt from its spec.
    """
    from robustedge.export.context import load_context
    from robustedge.export.layers import check_layers

    if not isinstance(cfg, ExportConfig):
        raise TypeError(f"export_run takes an ExportConfig, got {type(cfg).__name__}")
    run_dir = Path(run_dir)
    ctx = load_context(run_dir, model)
    check_layers(ctx.model, cfg.made(), ctx.spec.name)  # before any work: one line, no crash
    out = Path(out) if out is not None else run_dir / "export"
    failed = out.with_name(out.name + ".failed")
    with staging_dir(out) as stage:
        try:
            attack = evalsets.transfer_attack(ctx.eps, cfg.transfer_steps, cfg.transfer_restarts)
            calib = evalsets.Calibration(cfg.calib_samples, cfg.calib_adv_fraction, calib_x)
            report = _build(stage, ctx, cfg, attack, calib)
        except RobustEdgeError as e:
            _keep_failed(stage, failed, str(e))
            raise RobustEdgeError(f"{e} (reports kept in {failed})") from None
    shutil.rmtree(failed, ignore_errors=True)
    report.out = out
    return report


@dataclass
class EvalSets:
    """The test split, its transfer (PGD) version, and their files in the export folder."""

    x: np.ndarray
    y: np.ndarray
    x_adv: np.ndarray
    files: Dict[str, str]


def _build(
    stage: Path, ctx: RunContext, cfg: ExportConfig, attack: Any, calib: evalsets.Calibration
) -> ExportReport:
    """Transfer set -> artifacts -> parity per format -> export.json + ledger.json."""
    timings: Dict[str, float] = {}
    fmts = list(cfg.made())
    sets = _transfer_set(stage, ctx, attack, cfg, timings)
    calib_x, calib_note = None, None
    if any(is_quantized(f) for f in fmts):
        calib_x, calib_note = calib.inputs(ctx, attack, cfg.seed)
    made, info = builders.build_artifacts(stage, ctx, fmts, calib_x, timings)
    artifacts, failures = _check_artifacts(
        ctx, fmts, made, sets, cfg.margins(), cfg.parity, timings
    )
    ledger = build_ledger(ctx, made)
    manifest = {
        "run": str(ctx.run_dir),
        "data": ctx.data.name,
        "num_classes": ctx.spec.num_classes,
        "input_shape_nchw": list(ctx.spec.input_shape),
        "model": ctx.spec.name,
        "artifacts": artifacts,
        "eval_sets": sets.files,
        "eval_sha256": {k: sha256_file(stage / v) for k, v in sets.files.items()},
        "transfer_attack": evalsets.attack_record(attack),
        "calibration": calib_note,
        "onnx_export": info["onnx_export"],
        "interpreters": INTERPRETERS,
        "parity_gate": "on" if cfg.parity else "off",
        "passed": not failures,
        "failures": failures,
        "seed": cfg.seed,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    write_json(stage / "export.json", manifest)
    write_json(stage / "ledger.json", ledger)
    if failures:
        raise RobustEdgeError(
            failures[0] + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else "")
        )
    return ExportReport(stage, manifest, ledger)


def _transfer_set(
    stage: Path, ctx: RunContext, attack: Any, cfg: ExportConfig, timings: Dict[str, float]
) -> EvalSets:
    """Attack the test split (at most ``cfg.eval_images``, a seeded draw) against the PyTorch
    model once; every format is scored on it."""
    t = time.perf_counter()
    x, y = seeded_subset(ctx.data.x_test, ctx.data.y_test, cfg.eval_images, cfg.seed)
    x_adv = evalsets.pgd_inputs(ctx.model, x, y, attack, cfg.seed)
    files = evalsets.save_eval_sets(stage, x, y, x_adv, attack)
    timings["transfer_set"] = time.perf_counter() - t
    return EvalSets(x, y, x_adv, files)


def _check_artifacts(
    ctx: RunContext,
    fmts: List[str],
    made: Dict[str, Path],
    sets: EvalSets,
    margins: Margins,
    check: bool,
    timings: Dict[str, float],
) -> Tuple[Dict[str, Any], List[str]]:
    """One export.json record per format (file, hash, I/O spec, parity); the failures."""
    from robustedge.export.runners import make_runner

    torch_clean, torch_adv = ctx.logits(sets.x), ctx.logits(sets.x_adv)
    artifacts: Dict[str, Any] = {}
    failures: List[str] = []
    for fmt in fmts:
        t = time.perf_counter()
        runner = make_runner(fmt, made[fmt], ctx.spec.input_shape)
        rec: Dict[str, Any] = {"skipped": True, "passed": None}
        if check or fmt == ROOT:  # ONNX is always checked against PyTorch
            clean, adv = runner.logits(sets.x), runner.logits(sets.x_adv)
            rec = parity(fmt, clean, adv, torch_clean, torch_adv, sets.y, margins)
            if not rec["passed"]:
                failures.append(failure_message(fmt, rec))
        artifacts[fmt] = {
            "file": made[fmt].name,
            "sha256": sha256_file(made[fmt]),
            "bytes": made[fmt].stat().st_size,
            "input": runner.input.to_dict(),
            "output": runner.output.to_dict(),
            "parity": rec,
        }
        timings[f"parity_{fmt}"] = time.perf_counter() - t
    return artifacts, failures


def _keep_failed(stage: Path, failed: Path, message: str) -> None:
    """Copy what was built to ``failed`` (replacing an older one) with the error beside it."""
    try:
        write_json(stage / "failure.json", {"error": message})
        with staging_dir(failed) as tmp:
            shutil.copytree(stage, tmp, dirs_exist_ok=True)
        logger.warning("export failed; reports kept in %s", failed)
    except OSError as e:
        logger.warning("could not keep the failed export in %s: %s", failed, e)
