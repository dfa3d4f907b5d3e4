"""Export: ONNX, TFLite float32 / full-integer int8 (and optional ONNX int8, sparse TFLite),
each checked against PyTorch (parity gate), with a size/sparsity ledger. See :func:`export_run`
and :class:`ExportConfig`; the formats are the ``FORMATS`` registry (:mod:`.formats`).

Heavy libraries (torch, onnx, onnxruntime, TensorFlow via onnx2tf) load only inside functions.
"""

from typing import Any

from robustedge.export import builders  # noqa: F401  (registers the built-in formats)
from robustedge.export.formats import (
    FILES,
    FORMATS,
    ExportFormat,
    Family,
    parse_formats,
    register_format,
)

# Loaded on first use (PEP 562): the format registry must stay importable without torch (the
# host's device code reads it), while the config and the pipeline need the attacks.
_LAZY = {
    "ExportConfig": "robustedge.export.config",
    "ExportReport": "robustedge.export.pipeline",
    "export_run": "robustedge.export.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robustedge.export' has no attribute {name!r}")


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
