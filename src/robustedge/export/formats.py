"""The export format table: names, artifact files and the interpreter each is checked with.

Everything that names a format (the export pipeline, its builders, the recipe schema, the
bundle builder) reads it from here.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Union

from robustedge.errors import RobustEdgeError

FORMATS = ("onnx", "onnx-int8", "tflite-float32", "tflite-int8", "tflite-int8-sparse")
FILES: Dict[str, str] = {
    "onnx": "model.onnx",
    "onnx-int8": "model_int8.onnx",
    "tflite-float32": "model_float32.tflite",
    "tflite-int8": "model_int8.tflite",
    "tflite-int8-sparse": "model_int8_sparse.tflite",
}
# A sparse-encoded format and the dense format it is measured against in the ledger.
SPARSE_OF = {"tflite-int8-sparse": "tflite-int8"}
INTERPRETERS = {
    "onnx": "onnxruntime CPUExecutionProvider, 1 thread",
    "tflite": "ai_edge_litert Interpreter, OpResolverType.BUILTIN_REF (reference kernels: "
    "bit-identical int8 on host and ARM), 1 thread, batch 1",
}
DEFAULT_FORMATS = ("onnx", "tflite-float32", "tflite-int8")


def is_quantized(fmt: str) -> bool:
    """Formats with int8 weights and activations (calibrated; looser parity margins)."""
    return "int8" in fmt


def parse_formats(formats: Union[Sequence[str], str]) -> List[str]:
    """Comma list or sequence -> ordered, validated format names (``onnx`` always included:
    every other format is made from it)."""
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise RobustEdgeError(f"unknown export format '{unknown[0]}' (known: {', '.join(FORMATS)})")
    return [f for f in FORMATS if f in names or f == "onnx"]
