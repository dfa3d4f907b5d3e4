"""Export: ONNX, TFLite float32 / full-integer int8 (and optional ONNX int8), each checked
against PyTorch (parity gate), with a size/sparsity ledger. See :func:`export_run`.

Heavy libraries (torch, onnx, onnxruntime, TensorFlow via onnx2tf) load only inside functions.
"""

from robustedge.export.formats import FILES, FORMATS, parse_formats
from robustedge.export.pipeline import ExportReport, export_run

__all__ = ["FILES", "FORMATS", "ExportReport", "export_run", "parse_formats"]
