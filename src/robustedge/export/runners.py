"""Run an exported artifact on NCHW float inputs in [0, 1] and return float logits.

One class per interpreter: :class:`OrtRunner` (onnxruntime, CPU) and :class:`LiteRunner`
(ai_edge_litert). Both run batch 1, one sample per ``invoke``, exactly as a board does.
The TFLite runner reads layout, dtype, scale and zero point from the model itself and
quantizes / transposes the input and dequantizes the output accordingly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from robustedge.errors import RobustEdgeError
from robustedge.export.formats import FORMATS, Family

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorInfo:
    """What a caller needs to feed or read one tensor, as stored in export.json."""

    name: str
    layout: Optional[str]
    shape: List[int]
    dtype: str
    scale: Optional[float]
    zero_point: Optional[int]

    def to_dict(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        if d["layout"] is None:
            d.pop("layout")
        return d


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """float -> the tensor's dtype (int8/uint8 via scale and zero point; float unchanged)."""
    if info.scale is None:
        return x.astype(np.float32)
    dt = np.dtype(info.dtype)
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    return np.clip(np.round(x / info.scale + info.zero_point), lo, hi).astype(dt)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    if info.scale is None:
        return q.astype(np.float32)
    return ((q.astype(np.float32) - info.zero_point) * info.scale).astype(np.float32)


def detect_layout(shape: Tuple[int, ...], nchw: Tuple[int, int, int]) -> str:
    """NHWC or NCHW by matching the model's input shape against (C, H, W)."""
    c, h, w = nchw
    if list(shape[1:]) == [h, w, c]:
        return "NHWC"
    if list(shape[1:]) == [c, h, w]:
        return "NCHW"
    raise RobustEdgeError(f"model input shape {list(shape)} fits neither NCHW nor NHWC of {nchw}")


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """NCHW batch -> the model's layout."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1) if layout == "NHWC" else x)


class Runner:
    """Base: ``logits(x_nchw) -> (N, classes)`` float32, one invoke per sample."""

    input: TensorInfo
    output: TensorInfo

    def run_one(self, x: np.ndarray) -> np.ndarray:
        """One already-laid-out, already-quantized batch-1 input -> raw output."""
        raise NotImplementedError

    def prepare(self, x_nchw: np.ndarray) -> np.ndarray:
        """NCHW float batch -> model layout and dtype (call once, then ``run_one`` per row)."""
        return quantize(
            to_layout(x_nchw.astype(np.float32), self.input.layout or "NCHW"), self.input
        )

    def logits(self, x_nchw: np.ndarray) -> np.ndarray:
        xs = self.prepare(x_nchw)
        out = [dequantize(self.run_one(xs[i : i + 1]), self.output) for i in range(len(xs))]
        return np.concatenate(out).reshape(len(xs), -1)


class OrtRunner(Runner):
    """onnxruntime on CPU, ``threads`` intra-op threads (float or QDQ int8 models)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise RobustEdgeError(f"onnxruntime cannot load {path}: {_first_line(e)}") from None
        i, o = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input = TensorInfo(i.name, "NCHW", list(i.shape), "float32", None, None)
        self.output = TensorInfo(o.name, None, list(o.shape), "float32", None, None)

    def run_one(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input.name: x})[0]


class LiteRunner(Runner):
    """ai_edge_litert interpreter, ``threads`` threads; ``reference=True`` selects the
    BUILTIN_REF kernels (bit-identical int8 results across host and ARM, slower)."""

    def __init__(
        self, path: Path, nchw: Tuple[int, int, int], threads: int = 1, reference: bool = True
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
        try:
            self.interpreter = Interpreter(
                model_path=str(path), num_threads=threads, experimental_op_resolver_type=kind
            )
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise RobustEdgeError(
                f"TFLite interpreter cannot load {path}: {_first_line(e)}"
            ) from None
        ins, outs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise RobustEdgeError(
                f"{path}: expected 1 input and 1 output, got {len(ins)}, {len(outs)}"
            )
        layout = detect_layout(tuple(ins[0]["shape"]), nchw)
        self.input = lite_tensor_info(ins[0], layout)
        self.output = lite_tensor_info(outs[0], None)
        self._in, self._out = ins[0]["index"], outs[0]["index"]

    def run_one(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)


def lite_tensor_info(d: Dict[str, Any], layout: Optional[str]) -> TensorInfo:
    """TensorInfo from an interpreter's input/output details (real scale and zero point)."""
    dtype = np.dtype(d["dtype"]).name
    scale, zp = d["quantization"]
    quantized = dtype in ("int8", "uint8", "int16") and scale != 0.0
    return TensorInfo(
        d["name"],
        layout,
        [int(s) for s in d["shape"]],
        dtype,
        float(scale) if quantized else None,
        int(zp) if quantized else None,
    )


def make_runner(
    fmt: str, path: Path, nchw: Tuple[int, int, int], threads: int = 1, reference: bool = True
) -> Runner:
    """The interpreter of an export format's family (its descriptor in ``FORMATS``)."""
    if FORMATS[fmt].family is Family.ONNX:
        return OrtRunner(path, threads)
    return LiteRunner(path, nchw, threads, reference)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
