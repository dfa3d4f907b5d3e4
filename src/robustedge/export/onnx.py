"""PyTorch -> ONNX with the dynamo exporter (TorchScript exporter only as a fallback),
then ``onnx.checker`` (full check, shape inference included)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class OnnxExport:
    """How the ONNX file was made: exporter used (and why a fallback happened), opset."""

    path: Path
    exporter: str
    opset: int
    fallback_reason: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "exporter": self.exporter,
            "opset": self.opset,
            "fallback_reason": self.fallback_reason,
        }


def export_onnx(model: Any, input_shape: Tuple[int, int, int], path: Path) -> OnnxExport:
    """Export ``model`` (eval mode, batch 1, static shape) to ``path`` and check it."""
    import torch

    model = model.eval()
    x = torch.zeros(1, *input_shape)
    reason = None
    try:
        _export(model, x, path, dynamo=True)
        exporter = "dynamo"
    except Exception as e:  # the dynamo exporter raises many internal error types
        reason = f"{type(e).__name__}: {_short(e)}"
        logger.warning("dynamo ONNX export failed (%s); falling back to TorchScript", reason)
        try:
            _export(model, x, path, dynamo=False)
        except Exception as e2:
            raise RobustEdgeError(
                f"ONNX export failed (dynamo: {reason}; torchscript: "
                f"{type(e2).__name__}: {_short(e2)})"
            ) from None
        exporter = "torchscript"
    opset = check_onnx(path)
    return OnnxExport(path, exporter, opset, reason)


def _export(model: Any, x: Any, path: Path, dynamo: bool) -> None:
    import torch

    with warnings.catch_warnings(), _quiet("torch.onnx._internal.exporter._registration"):
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                verbose=False,
            )
            program.save(str(path))
        else:
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=17,
            )


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence one chatty logger (the exporter's 'torchvision is not installed' lines)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def check_onnx(path: Path) -> int:
    """Run ``onnx.checker`` (full check); returns the default-domain opset."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # DecodeError, ValidationError, InferenceError
        raise RobustEdgeError(f"ONNX check failed for {path.name}: {_short(e)}") from None
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def onnx_weights(path: Path) -> Dict[str, Any]:
    """Initializers of an ONNX file as numpy arrays (for the ledger)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text[:limit] + ("..." if len(text) > limit else "")
