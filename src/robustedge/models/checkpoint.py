"""Weights as safetensors with the architecture beside them: a run reloads by path alone.

Layout in a run folder: ``model.safetensors`` (weights and buffers) and ``model.json``
(:class:`ModelSpec` plus optional ``masks`` / ``structure`` notes written by compression).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from robustedge.errors import CheckpointError
from robustedge.io import PathLike, atomic_path, read_json, write_json
from robustedge.models.base import ModelSpec, build_model

WEIGHTS = "model.safetensors"
SPEC = "model.json"


def save_model(
    run_dir: PathLike, model: nn.Module, spec: ModelSpec, extra: Optional[Dict[str, Any]] = None
) -> None:
    """Write weights (safetensors) then the spec (JSON), each atomically."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    write_json(run_dir / SPEC, {"spec": spec.to_dict(), **(extra or {})})


def load_spec(run_dir: PathLike) -> Tuple[ModelSpec, Dict[str, Any]]:
    meta = read_json(Path(run_dir) / SPEC)
    try:
        return ModelSpec.from_dict(meta["spec"]), meta
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"bad model spec in {Path(run_dir) / SPEC}: {e}") from None


def load_model(run_dir: PathLike, model: Optional[nn.Module] = None) -> Tuple[nn.Module, ModelSpec]:
    """Rebuild the model of a run folder and load its weights (no pickle involved).

    ``model`` may be given when the architecture differs from the spec (e.g. a physically
    shrunk student rebuilt by the compression code).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    spec, meta = load_spec(run_dir)
    model = build_model(spec) if model is None else model
    if meta.get("structure") == "shrunk":  # channels physically removed (robustedge.compress)
        from robustedge.models.resize import resize_from_file

        resize_from_file(model, run_dir / WEIGHTS)
    load_weights(model, run_dir / WEIGHTS)
    return model, spec


def load_weights(model: nn.Module, path: PathLike) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file: {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt weights file {path}: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckpointError(
            f"weights in {path} do not match the architecture: {detail}"
        ) from None


def safe_torch_load(path: PathLike) -> Any:
    """``torch.load`` restricted to tensors and primitives (never unpickles code)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"missing checkpoint: {path}") from None
    except Exception as e:  # corrupt zip, truncated file, disallowed globals
        raise CheckpointError(f"corrupt checkpoint {path}: {type(e).__name__}: {e}") from None
