"""ONNX -> TFLite float32 and full-integer int8 (int8 input and output) with onnx2tf.

onnx2tf 1.29.24 runs as a subprocess of this Python (``python -m onnx2tf``) so that
TensorFlow never loads into the calling process. Calibration data is an NHWC float32
``calib.npy`` of inputs in [0, 1]; mean 0 and std 1 are passed, so the int8 model takes raw
[0, 1] pixels (quantized with the input scale/zero point it stores). Layout becomes NHWC.

Sparse int8 (:func:`convert_tflite_sparse`): onnx2tf's SavedModel (``-osd``) converted again by
TensorFlow's ``TFLiteConverter`` with ``Optimize.EXPERIMENTAL_SPARSITY`` and the same
calibration data stores pruned weight tensors in TFLite's sparse encoding (a DENSIFY op expands
them when the interpreter prepares: flash shrinks, RAM does not). Also run in a subprocess.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from robustedge.errors import RobustEdgeError
from robustedge.export.convert_cache import conversion_cache

logger = logging.getLogger(__name__)

CONVERT_TIMEOUT_S = 1800
# the interpreter the converters run in, when not this one: a launcher of this same environment
# (the conversion cache keys on the onnx2tf and TensorFlow installed here), e.g. the tests'
# fork server preloaded with TensorFlow (tests/cli_fork_server.py)
CONVERTER_PYTHON_ENV = "ROBUSTEDGE_CONVERTER_PYTHON"
# what the converters run with beside the caller's environment: TensorFlow's C++ log quiet, no GPU
CONVERTER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
LOG_TAIL_LINES = 40
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
_BOILERPLATE = re.compile(
    r"trace log|onnx_op_name|input_onnx_file_path|Read this|Alternatively|If the input OP|"
    r"Also, for models"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def convert_tflite(
    onnx_path: Path,
    workdir: Path,
    input_name: str,
    calib_nhwc: Optional[np.ndarray] = None,
    sample_nhwc: Optional[np.ndarray] = None,
    saved_model: bool = False,
) -> Dict[str, Path]:
    """Run onnx2tf; returns ``{"float32": path[, "int8": path][, "saved_model": folder]}``.

    ``calib_nhwc`` (N x H x W x C float32 in [0, 1]) turns on full-integer int8 output with
    per-channel weights. ``sample_nhwc`` (real inputs, NHWC) stands in for the sample images
    onnx2tf would otherwise download for 3-channel models. ``saved_model`` also writes the
    TensorFlow SavedModel (``-osd``; ``"saved_model"``, a folder) that
    :func:`convert_tflite_sparse` converts. The converter log goes to ``workdir/onnx2tf.log``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    workdir, onnx_path = workdir.resolve(), onnx_path.resolve()
    out = workdir / "onnx2tf_out"
    if sample_nhwc is not None and sample_nhwc.shape[-1] == 3:
        _write_sample_images(workdir, sample_nhwc)
    flags = _onnx2tf_flags(input_name, calib_nhwc is not None, saved_model)
    with conversion_cache(onnx_path, flags, calib_nhwc, sample_nhwc, workdir) as cached:
        if not cached:
            log = _convert(onnx_path, out, flags, calib_nhwc, workdir)
        else:
            log = (workdir / "onnx2tf.log").read_text()
    stem = onnx_path.stem
    found = {"float32": out / f"{stem}_float32.tflite"}
    if calib_nhwc is not None:
        found["int8"] = out / f"{stem}_full_integer_quant.tflite"
    if saved_model:
        found["saved_model"] = out / SAVED_MODEL_PB
    missing = [k for k, p in found.items() if not p.is_file()]
    if missing:
        raise RobustEdgeError(
            f"TFLite conversion (onnx2tf) wrote no {', '.join(missing)} model; "
            f"{describe_failure(log)}"
        )
    if saved_model:
        found["saved_model"] = out
    return found


def _onnx2tf_flags(input_name: str, quantize: bool, saved_model: bool) -> List[str]:
    """onnx2tf's options past ``-i``/``-o``; ``{calib}`` stands for the calibration file."""
    flags = ["-v", "info"] + (["-osd"] if saved_model else [])
    if quantize:
        flags += ["-oiqt", "-qt", "per-channel", "-cind", input_name, "{calib}"]
        flags += ["[[[[0.0]]]]", "[[[[1.0]]]]", "-iqd", "int8", "-oqd", "int8"]
    return flags


def _convert(
    onnx_path: Path, out: Path, flags: List[str], calib: Optional[np.ndarray], workdir: Path
) -> str:
    """Run onnx2tf into ``out``; returns its log (also written to ``workdir/onnx2tf.log``)."""
    calib_path = workdir / "calib.npy"
    if calib is not None:
        np.save(calib_path, np.ascontiguousarray(calib, dtype=np.float32))
    cmd = [converter_python(), "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(out)]
    cmd += [str(calib_path) if f == "{calib}" else f for f in flags]
    return _run(cmd, workdir / "onnx2tf.log")


SAVED_MODEL_PB = "saved_model.pb"
# Runs in a fresh interpreter (TensorFlow never loads into the caller): argv = SavedModel folder,
# calibration .npy (N x H x W x C float32), output .tflite.
_SPARSE_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf

saved, calib_path, out = sys.argv[1:4]
calib = np.load(calib_path).astype(np.float32)

def representative():
    for i in range(len(calib)):
        yield [calib[i : i + 1]]

conv = tf.lite.TFLiteConverter.from_saved_model(saved)
conv.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
conv.representative_dataset = representative
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
conv.inference_input_type = tf.int8
conv.inference_output_type = tf.int8
data = conv.convert()
with open(out + ".tmp", "wb") as f:
    f.write(data)
"""


def convert_tflite_sparse(saved_model_dir: Path, out_path: Path, calib_nhwc: np.ndarray) -> Path:
    """SavedModel (onnx2tf ``-osd``) -> full-int8 TFLite with sparse-encoded pruned weights.

    ``TFLiteConverter.from_saved_model`` with ``optimizations = [Optimize.DEFAULT,
    Optimize.EXPERIMENTAL_SPARSITY]``, ``calib_nhwc`` (N x H x W x C float32 in [0, 1], the
    int8 path's calibration inputs) as the representative data set, ``TFLITE_BUILTINS_INT8``
    and int8 input and output (like the ``tflite-int8`` model: raw [0, 1] pixels quantized with
    the stored input scale / zero point, NHWC). Returns ``out_path``, written atomically; the
    converter log goes beside it (``<name>.log``).
    """
    saved_model_dir, out_path = Path(saved_model_dir).resolve(), Path(out_path).resolve()
    if not (saved_model_dir / SAVED_MODEL_PB).is_file():
        raise RobustEdgeError(
            f"{saved_model_dir} holds no SavedModel ({SAVED_MODEL_PB}): convert with "
            "saved_model=True (onnx2tf -osd) first"
        )
    calib = np.asarray(calib_nhwc, dtype=np.float32)
    if calib.ndim != 4 or len(calib) == 0:
        raise RobustEdgeError(f"calibration inputs must be N x H x W x C, got {calib.shape}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    calib_path = out_path.with_name(out_path.stem + ".calib.npy")
    np.save(calib_path, np.ascontiguousarray(calib))
    tmp = Path(str(out_path) + ".tmp")
    cmd = [
        converter_python(),
        "-c",
        _SPARSE_SCRIPT,
        str(saved_model_dir),
        str(calib_path),
        str(out_path),
    ]
    try:
        _run(cmd, out_path.with_suffix(".log"), what="sparse TFLite conversion (TFLiteConverter)")
        if not tmp.is_file():
            raise RobustEdgeError("sparse TFLite conversion (TFLiteConverter) wrote no model")
        os.replace(tmp, out_path)
    finally:
        calib_path.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out_path


def _write_sample_images(workdir: Path, x_nhwc: np.ndarray) -> None:
    """onnx2tf 1.29.24 downloads 20 sample RGB images (from GitHub) for any model with a
    3-channel input unless ``SAMPLE_FILE`` exists in its working folder: write our own real
    inputs there instead (nearest-neighbour resized to 128 x 128), so nothing is fetched."""
    x = np.resize(x_nhwc, (20, *x_nhwc.shape[1:])).astype(np.float32)
    rows = np.arange(128) * x.shape[1] // 128
    cols = np.arange(128) * x.shape[2] // 128
    np.save(workdir / SAMPLE_FILE, np.ascontiguousarray(x[:, rows][:, :, cols]))


def converter_python() -> str:
    """``$ROBUSTEDGE_CONVERTER_PYTHON`` if set, else this interpreter."""
    return os.environ.get(CONVERTER_PYTHON_ENV) or sys.executable


def _run(cmd: List[str], log_path: Path, what: str = "TFLite conversion (onnx2tf)") -> str:
    env = {**os.environ, **CONVERTER_ENV}
    logger.info("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            timeout=CONVERT_TIMEOUT_S,
            cwd=log_path.parent,
        )
    except subprocess.TimeoutExpired:
        raise RobustEdgeError(f"{what} timed out after {CONVERT_TIMEOUT_S} s") from None
    log = _ANSI.sub("", proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    log_path.write_text(log)
    if proc.returncode != 0:
        raise RobustEdgeError(
            f"{what} failed with exit code {proc.returncode}; {describe_failure(log)}"
        )
    return log


def describe_failure(log: str) -> str:
    """One line naming the failing ONNX op (when onnx2tf names it) and the error raised."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    names = re.findall(r"onnx_op_name:\s*(\S+)", log)
    types = re.findall(r"onnx_op_type:\s*(\S+)", log)
    raised = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", ln)]
    errors = [ln for ln in lines if ln.startswith("ERROR:") and not _BOILERPLATE.search(ln)]
    parts = []
    if names:
        parts.append(f"op {names[-1]}" + (f" ({types[-1]})" if types else ""))
    last = (raised or errors or lines[-1:] or ["(empty log)"])[-1]
    parts.append(f"last error: {last[:300]}")
    return "; ".join(parts)
