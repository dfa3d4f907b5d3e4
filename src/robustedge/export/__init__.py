"""Export: ONNX, TFLite float32 / full-integer int8 (and optional ONNX int8, sparse TFLite),
each checked against PyTorch (parity gate), with a size/sparsity ledger. See :func:`export_run`
and :class:`ExportConfig`; the formats are the ``FORMATS`` registry (:mod:`.formats`).

Heavy libraries (torch, onnx, onnxruntime, TensorFlow via onnx2tf) load only inside functions.
"""

from robustedge.export import builders  # noqa: F401  (registers the built-in formats)
from robustedge.export.config import ExportConfig
from robustedge.export.formats import (
    FILES,
    FORMATS,
    ExportFormat,
    Family,
    parse_formats,
    register_format,
)
from robustedge.export.pipeline import ExportReport, export_run

__all__ = [
    "FILES",
    "FORMATS",
    "ExportConfig",
    "ExportFormat",
    "ExportReport",
    "Family",
    "export_run",
    "parse_formats",
    "register_format",
]
