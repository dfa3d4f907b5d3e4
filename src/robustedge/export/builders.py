"""One builder per export format, the built-in formats' descriptors, and `build_artifacts`,
which runs the builders of the requested formats in a staging folder (used by the pipeline).

A builder is ``build(job, fmt) -> Path``: it writes ``job.out(fmt)`` from what the job holds
(the run's model, the ONNX file, the calibration inputs) and returns the file. Work two
formats share (one onnx2tf run makes both TFLite formats) goes through ``job.once``.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from robustedge.export.formats import FORMATS, ROOT, ExportFormat, Family, register_format

logger = logging.getLogger(__name__)

WORK = ".work"


@dataclass
class BuildJob:
    """What a builder gets: the staging folder, the run (``ctx``: model, spec, data), the
    requested formats in build order, the calibration inputs (NCHW float32, None when no
    format is int8), the files made so far, notes for export.json, and shared results."""

    stage: Path
    ctx: Any
    formats: Tuple[ExportFormat, ...]
    calib_x: Optional[np.ndarray]
    made: Dict[str, Path] = field(default_factory=dict)
    notes: Dict[str, Any] = field(default_factory=dict)
    shared: Dict[str, Any] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        """Scratch folder (converter outputs and log); removed when the build ends."""
        return self.stage / WORK

    @property
    def onnx(self) -> Path:
        """The ONNX file every other format is made from."""
        return self.made[ROOT]

    def out(self, fmt: ExportFormat) -> Path:
        return self.stage / fmt.file

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()``'s result, computed the first time ``key`` is asked for."""
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]


def build_artifacts(
    stage: Path, ctx: Any, fmts: List[str], calib_x: Optional[np.ndarray], timings: Dict[str, float]
) -> Tuple[Dict[str, Path], Dict[str, Any]]:
    """Run the builders of ``fmts`` (``onnx`` first) into ``stage``: {format: path}, notes."""
    job = BuildJob(stage, ctx, tuple(FORMATS[f] for f in fmts), calib_x)
    try:
        for fmt in job.formats:
            t = time.perf_counter()
            job.made[fmt.name] = fmt.build(job, fmt)
            timings[fmt.name] = time.perf_counter() - t
    finally:
        _keep_log(job.work, stage)
    return job.made, job.notes


def _keep_log(work: Path, stage: Path) -> None:
    log = work / "onnx2tf.log"
    if log.is_file():
        shutil.copy2(log, stage / "onnx2tf.log")
    shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- builders


def build_onnx(job: BuildJob, fmt: ExportFormat) -> Path:
    """PyTorch -> ONNX (dynamo exporter, TorchScript as fallback), checked by onnx.checker."""
    from robustedge.export.onnx import export_onnx

    res = export_onnx(job.ctx.model, job.ctx.spec.input_shape, job.out(fmt))
    job.notes["onnx_export"] = res.to_dict()
    return res.path


def build_onnx_int8(job: BuildJob, fmt: ExportFormat) -> Path:
    """ONNX -> QDQ int8 by onnxruntime static quantization on the calibration inputs."""
    from robustedge.export.onnx import INPUT_NAME
    from robustedge.export.onnx_quant import quantize_onnx

    return quantize_onnx(job.onnx, job.out(fmt), INPUT_NAME, job.calib_x)


def onnx2tf_output(kind: str) -> Callable[[BuildJob, ExportFormat], Path]:
    """The builder that copies onnx2tf's ``kind`` model (``float32`` or ``int8``)."""

    def build(job: BuildJob, fmt: ExportFormat) -> Path:
        found = job.once("onnx2tf", lambda: _onnx2tf(job))
        return Path(shutil.copy2(found[kind], job.out(fmt)))

    build.__doc__ = f"ONNX -> TFLite {kind} with onnx2tf (one conversion for every TFLite format)."
    return build


def build_tflite_sparse(job: BuildJob, fmt: ExportFormat) -> Path:
    """onnx2tf's SavedModel -> int8 TFLite with TFLite's sparse weight encoding, calibrated
    on the same inputs as the dense int8 model."""
    from robustedge.export.tflite import convert_tflite_sparse

    found = job.once("onnx2tf", lambda: _onnx2tf(job))
    return convert_tflite_sparse(found["saved_model"], job.out(fmt), _nhwc(job.calib_x))


def _onnx2tf(job: BuildJob) -> Dict[str, Path]:
    """One onnx2tf run for all requested TFLite formats: int8 when one of them is quantized
    (with the job's calibration inputs), the SavedModel when the sparse builder needs it."""
    from robustedge.export.onnx import INPUT_NAME
    from robustedge.export.tflite import convert_tflite

    tfl = [f for f in job.formats if f.family is Family.TFLITE]
    calib = _nhwc(job.calib_x) if any(f.quantized for f in tfl) else None
    saved_model = any(f.build is build_tflite_sparse for f in tfl)
    sample = _nhwc(job.ctx.data.x_train[:20])
    return convert_tflite(job.onnx, job.work, INPUT_NAME, calib, sample, saved_model=saved_model)


def _nhwc(x: Optional[np.ndarray]) -> np.ndarray:
    if x is None:
        raise ValueError("an int8 format needs calibration inputs")
    return x.transpose(0, 2, 3, 1)


# ------------------------------------------------------------------- built-in formats

BUILTIN = (
    ExportFormat("onnx", "model.onnx", Family.ONNX, build_onnx, board_rank=50, logit_tol=1e-4),
    ExportFormat(
        "onnx-int8", "model_int8.onnx", Family.ONNX, build_onnx_int8, board_rank=40, quantized=True
    ),
    ExportFormat(
        "tflite-float32",
        "model_float32.tflite",
        Family.TFLITE,
        onnx2tf_output("float32"),
        board_rank=30,
    ),
    ExportFormat(
        "tflite-int8",
        "model_int8.tflite",
        Family.TFLITE,
        onnx2tf_output("int8"),
        board_rank=20,
        quantized=True,
    ),
    ExportFormat(
        "tflite-int8-sparse",
        "model_int8_sparse.tflite",
        Family.TFLITE,
        build_tflite_sparse,
        board_rank=10,
        quantized=True,
        dense="tflite-int8",
    ),
)
for _fmt in BUILTIN:
    register_format(_fmt)
