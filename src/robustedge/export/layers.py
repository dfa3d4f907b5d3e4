"""Layers an export format's toolchain cannot convert, found on the PyTorch model before any
work: one line naming the layer (its module path and type) instead of a converter's crash.

Each entry was seen to fail here (onnx2tf 1.29 exits with a segmentation fault, its log
naming no op, on the ONNX ``LSTM`` node an ``nn.LSTM`` exports to); layers not listed are
left to the converter and the parity gate.
"""

from __future__ import annotations

from typing import Iterable, List, Tuple, Type

import torch.nn as nn

from robustedge.errors import RobustEdgeError
from robustedge.export.formats import FORMATS, Family

__all__ = ["UNSUPPORTED", "check_layers", "unsupported_layers"]

# (interpreter family, layer types, what is unsupported)
UNSUPPORTED: Tuple[Tuple[Family, Tuple[Type[nn.Module], ...], str], ...] = (
    (
        Family.TFLITE,
        (nn.RNNBase,),  # LSTM, GRU, RNN
        "recurrent layers do not convert to TFLite (onnx2tf crashes on the ONNX recurrent op)",
    ),
)


def unsupported_layers(model: nn.Module, fmt: str) -> List[Tuple[str, nn.Module, str]]:
    """(module path, module, reason) of every layer of ``model`` that format ``fmt`` cannot
    hold, in definition order."""
    family = FORMATS[fmt].family
    out = []
    for name, module in model.named_modules():
        for fam, types, reason in UNSUPPORTED:
            if fam is family and isinstance(module, types):
                out.append((name or "(the model itself)", module, reason))
    return out


def check_layers(model: nn.Module, formats: Iterable[str], model_name: str) -> None:
    """One line naming the first layer a chosen format cannot hold (and how many more)."""
    for fmt in formats:
        bad = unsupported_layers(model, fmt)
        if bad:
            name, module, reason = bad[0]
            more = f" (+{len(bad) - 1} more such layers)" if len(bad) > 1 else ""
            raise RobustEdgeError(
                f"model '{model_name}': layer {name} ({type(module).__name__}) cannot be "
                f"exported to {fmt}: {reason}{more}; export other formats (e.g. onnx) or "
                "replace the layer"
            )
