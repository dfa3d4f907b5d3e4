"""Make the artifact files and the ledger in a staging folder (used by the pipeline)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from robustedge.export import ledger as L
from robustedge.export.formats import FILES, SPARSE_OF

logger = logging.getLogger(__name__)

WORK = ".work"


def build_artifacts(
    stage: Path, ctx: Any, fmts: List[str], calib_x: Optional[np.ndarray], timings: Dict[str, float]
) -> Tuple[Dict[str, Path], Dict[str, Any]]:
    """Write the requested formats into ``stage``; returns {format: path} and notes."""
    from robustedge.export.onnx import INPUT_NAME, export_onnx

    made: Dict[str, Path] = {}
    info: Dict[str, Any] = {}
    t = time.perf_counter()
    onnx_res = export_onnx(ctx.model, ctx.spec.input_shape, stage / FILES["onnx"])
    made["onnx"] = onnx_res.path
    info["onnx_export"] = onnx_res.to_dict()
    timings["onnx"] = time.perf_counter() - t
    work = stage / WORK
    if any(f.startswith("tflite") for f in fmts):
        t = time.perf_counter()
        try:
            made.update(_tflite(stage, work, made["onnx"], ctx, fmts, calib_x))
        finally:
            _keep_log(work, stage)
        timings["tflite"] = time.perf_counter() - t
    if "onnx-int8" in fmts:
        t = time.perf_counter()
        from robustedge.export.onnx_quant import quantize_onnx

        made["onnx-int8"] = quantize_onnx(
            made["onnx"], stage / FILES["onnx-int8"], INPUT_NAME, calib_x
        )
        timings["onnx_int8"] = time.perf_counter() - t
    return made, info


def _tflite(
    stage: Path, work: Path, onnx: Path, ctx: Any, fmts: List[str], calib_x: Optional[np.ndarray]
) -> Dict[str, Path]:
    """onnx2tf for float32 / int8 (and its SavedModel, re-converted with TensorFlow's
    EXPERIMENTAL_SPARSITY for ``tflite-int8-sparse``, with the same calibration inputs)."""
    from robustedge.export.onnx import INPUT_NAME
    from robustedge.export.tflite import convert_tflite, convert_tflite_sparse

    sparse = "tflite-int8-sparse" in fmts
    int8 = "tflite-int8" in fmts or sparse
    calib = calib_x.transpose(0, 2, 3, 1) if int8 else None
    sample = ctx.data.x_train[:20].transpose(0, 2, 3, 1)
    found = convert_tflite(onnx, work, INPUT_NAME, calib, sample, saved_model=sparse)
    made = {
        fmt: Path(shutil.copy2(path, stage / FILES[fmt]))
        for fmt, path in found.items()
        if fmt in fmts
    }
    if sparse:
        out = stage / FILES["tflite-int8-sparse"]
        made["tflite-int8-sparse"] = convert_tflite_sparse(found["saved_model"], out, calib)
    return made


def _keep_log(work: Path, stage: Path) -> None:
    log = work / "onnx2tf.log"
    if log.is_file():
        shutil.copy2(log, stage / "onnx2tf.log")
    shutil.rmtree(work, ignore_errors=True)


def build_ledger(ctx: Any, made: Dict[str, Path]) -> Dict[str, Any]:
    """Ledger rows: teacher (if any), the run's PyTorch model, then every artifact."""
    from robustedge.errors import RobustEdgeError
    from robustedge.models import load_model

    rows: List[Dict[str, Any]] = []
    teacher_row: Optional[Dict[str, Any]] = None
    teacher = ctx.teacher_dir()
    if teacher is not None:
        try:
            t_model, _ = load_model(teacher)
            teacher_row = L.torch_stage(
                "PyTorch dense teacher",
                t_model,
                ctx.spec.input_shape,
                teacher / "model.safetensors",
            )
            rows.append(teacher_row)
        except (RobustEdgeError, OSError, RuntimeError) as e:  # the teacher row is informative
            logger.warning("teacher %s not added to the ledger: %s", teacher, e)
    student = L.torch_stage(
        L.stage_name(ctx.meta, teacher is not None),
        ctx.model,
        ctx.spec.input_shape,
        ctx.run_dir / "model.safetensors",
    )
    rows.append(student)
    for fmt, path in made.items():
        row = (
            L.onnx_stage(path, student["macs"])
            if fmt.startswith("onnx")
            else L.tflite_stage(path, student["macs"])
        )
        row["stage"] = f"{fmt} ({path.name})"
        row["format"] = fmt
        row["zeros_survived"] = L.zeros_survived(student, row)
        row.update(L.flash_sizes(path))
        rows.append(row)
    return {
        "run": str(ctx.run_dir),
        "structure": L.structure_of(ctx.meta),
        "stages": rows,
        "verdict": L.verdict(ctx.meta, student),
        "student_vs_teacher": L.ratios(teacher_row, student) if teacher_row else None,
        "sparse_encoding": L.sparse_savings(made, SPARSE_OF),
        "notes": "MACs counted on the PyTorch graph (Conv2d/Linear, batch 1); weight "
        "zeros counted in rank>=2 weight tensors (int8 tensors for int8 formats).",
    }
