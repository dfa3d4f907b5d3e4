"""`export_run`: a run folder -> checked ONNX / TFLite artifacts, export.json and ledger.json.

Everything is built in a staging folder that replaces ``RUN/export`` only when every stage
and the parity gate pass. On failure the staging content (artifacts, reports, the onnx2tf
log) is kept in ``RUN/export.failed`` for inspection and a one-line RobustEdgeError is raised;
``RUN/export`` is never left half-written.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from robustedge.errors import RobustEdgeError
from robustedge.export import evalsets
from robustedge.export.parity import Margins, failure_message, is_quantized, parity
from robustedge.io import PathLike, staging_dir, write_json

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "onnx-int8", "tflite-float32", "tflite-int8")
FILES = {
    "onnx": "model.onnx",
    "onnx-int8": "model_int8.onnx",
    "tflite-float32": "model_float32.tflite",
    "tflite-int8": "model_int8.tflite",
}
INTERPRETERS = {
    "onnx": "onnxruntime CPUExecutionProvider, 1 thread",
    "tflite": "ai_edge_litert Interpreter, OpResolverType.BUILTIN_REF (reference kernels: "
    "bit-identical int8 on host and ARM), 1 thread, batch 1",
}


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


def parse_formats(formats: Sequence[str] | str) -> List[str]:
    """Comma list or sequence -> ordered, validated format names (``onnx`` always included:
    every other format is made from it)."""
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise RobustEdgeError(f"unknown export format '{unknown[0]}' (known: {', '.join(FORMATS)})")
    return [f for f in FORMATS if f in names or f == "onnx"]


def export_run(
    run_dir: PathLike,
    formats: Sequence[str] | str = ("onnx", "tflite-float32", "tflite-int8"),
    out: Optional[PathLike] = None,
    calib_samples: int = evalsets.DEFAULT_CALIB_SAMPLES,
    calib_adv_fraction: float = 0.0,
    clean_margin: float = 1.0,
    robust_margin: float = 2.0,
    check_parity: bool = True,
    seed: int = 0,
    transfer_steps: Optional[int] = None,
    transfer_restarts: Optional[int] = None,
    calib_x: Optional[np.ndarray] = None,
    model: Any = None,
) -> ExportReport:
    """Export the model of ``run_dir`` to ``formats`` in ``out`` (default ``RUN/export``).

    ``calib_x`` (N x C x H x W float32) replaces the default calibration draw of
    ``calib_samples`` training inputs (``calib_adv_fraction`` of them PGD-perturbed).
    ``transfer_steps`` / ``transfer_restarts`` override the PGD defaults (20 steps, 5
    restarts) of the transfer set; the settings used are recorded in export.json.
    ``model`` may be given when the run's architecture cannot be rebuilt from its spec.
    """
    from robustedge.export.context import load_context

    run_dir = Path(run_dir)
    fmts = parse_formats(formats)
    margins = Margins(clean_margin, robust_margin)
    ctx = load_context(run_dir, model)
    out = Path(out) if out is not None else run_dir / "export"
    failed = out.with_name(out.name + ".failed")
    with staging_dir(out) as stage:
        try:
            attack = evalsets.transfer_attack(ctx.eps, transfer_steps, transfer_restarts)
            calib = evalsets.Calibration(calib_samples, calib_adv_fraction, calib_x)
            report = _build(stage, ctx, fmts, margins, check_parity, seed, attack, calib)
        except RobustEdgeError as e:
            _keep_failed(stage, failed, str(e))
            raise RobustEdgeError(f"{e} (reports kept in {failed})") from None
    shutil.rmtree(failed, ignore_errors=True)
    report.out = out
    return report


def _build(
    stage: Path,
    ctx: Any,
    fmts: List[str],
    margins: Margins,
    check: bool,
    seed: int,
    attack: Dict[str, Any],
    calib: evalsets.Calibration,
) -> ExportReport:
    from robustedge.export import builders
    from robustedge.export.runners import make_runner

    timings: Dict[str, float] = {}
    t = time.perf_counter()
    x_test, y_test = ctx.data.x_test, ctx.data.y_test
    x_adv = evalsets.pgd_inputs(ctx.model, x_test, y_test, attack, seed)
    eval_files = evalsets.save_eval_sets(stage, x_test, y_test, x_adv, attack)
    timings["transfer_set"] = time.perf_counter() - t
    calib_x, calib_note = None, None
    if any(is_quantized(f) for f in fmts):
        calib_x, calib_note = calib.inputs(ctx, attack, seed)
    made, info = builders.build_artifacts(stage, ctx, fmts, calib_x, timings)
    torch_clean, torch_adv = ctx.logits(x_test), ctx.logits(x_adv)
    artifacts: Dict[str, Any] = {}
    failures: List[str] = []
    for fmt in fmts:
        t = time.perf_counter()
        runner = make_runner(fmt, made[fmt], ctx.spec.input_shape)
        rec: Dict[str, Any] = {"skipped": True, "passed": None}
        if check or fmt == "onnx":  # ONNX is always checked against PyTorch
            rec = parity(
                fmt,
                runner.logits(x_test),
                runner.logits(x_adv),
                torch_clean,
                torch_adv,
                y_test,
                margins,
            )
            if not rec["passed"]:
                failures.append(failure_message(fmt, rec))
        artifacts[fmt] = {
            "file": made[fmt].name,
            "sha256": _sha256(made[fmt]),
            "bytes": made[fmt].stat().st_size,
            "input": runner.input.to_dict(),
            "output": runner.output.to_dict(),
            "parity": rec,
        }
        timings[f"parity_{fmt}"] = time.perf_counter() - t
    ledger = builders.build_ledger(ctx, made)
    manifest = {
        "run": str(ctx.run_dir),
        "data": ctx.data.name,
        "num_classes": ctx.spec.num_classes,
        "input_shape_nchw": list(ctx.spec.input_shape),
        "model": ctx.spec.name,
        "artifacts": artifacts,
        "eval_sets": eval_files,
        "transfer_attack": attack,
        "calibration": calib_note,
        "onnx_export": info["onnx_export"],
        "interpreters": INTERPRETERS,
        "parity_gate": "on" if check else "off",
        "passed": not failures,
        "failures": failures,
        "seed": seed,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    write_json(stage / "export.json", manifest)
    write_json(stage / "ledger.json", ledger)
    if failures:
        raise RobustEdgeError(
            failures[0] + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else "")
        )
    return ExportReport(stage, manifest, ledger)


def _keep_failed(stage: Path, failed: Path, message: str) -> None:
    """Copy what was built to ``failed`` (replacing an older one) with the error beside it."""
    try:
        write_json(stage / "failure.json", {"error": message})
        with staging_dir(failed) as tmp:
            shutil.copytree(stage, tmp, dirs_exist_ok=True)
        logger.warning("export failed; reports kept in %s", failed)
    except OSError as e:
        logger.warning("could not keep the failed export in %s: %s", failed, e)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
