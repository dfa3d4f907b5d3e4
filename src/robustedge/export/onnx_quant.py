"""ONNX int8 via onnxruntime static quantization (QDQ format, per-channel int8 weights in 7
bits, int8 activations, float32 input and output), for boards that run onnxruntime.

``reduce_range``: onnxruntime's x86 kernels on CPUs without VNNI (AVX2, AVX-512 without VNNI)
multiply int8 pairs and sum them in int16 (VPMADDUBSW), which saturates with full-range
weights; measured on an AVX2-only host, a tiny CNN's int8 clean accuracy fell 10 points below
PyTorch's and its parity gate refused it (7-bit weights pass). The exported model runs on any
board, so it is quantized for the weakest kernels."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import numpy as np

from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)


def quantize_onnx(src: Path, dst: Path, input_name: str, calib_nchw: np.ndarray) -> Path:
    """Calibrate on ``calib_nchw`` (N x C x H x W float32, batch-1 feeds) and write ``dst``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(calib_nchw.astype(np.float32))

        def get_next(self) -> Optional[Dict[str, Any]]:
            x = next(self._it, None)
            return None if x is None else {input_name: x[None]}

    prepped = dst.with_name(dst.stem + ".prep.onnx")
    source = _preprocess(src, prepped)
    try:
        quantize_static(
            str(source),
            str(dst),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,
        )
    except Exception as e:  # onnxruntime raises plain Exceptions from its graph passes
        raise RobustEdgeError(
            f"ONNX int8 quantization failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        ) from None
    finally:
        prepped.unlink(missing_ok=True)
    return dst


def _preprocess(src: Path, dst: Path) -> Path:
    """onnxruntime's recommended pre-processing (optimisation + shape inference), if it works."""
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return dst
    except Exception as e:  # optional step: quantize the raw export instead
        logger.info("quantization pre-processing skipped: %s", e)
        return src
