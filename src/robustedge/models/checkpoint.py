"""Weights as safetensors with the architecture beside them: a run reloads by path alone.

Layout in a run folder: ``model.safetensors`` (weights and buffers) and ``model.json``
(:class:`ModelSpec` plus optional ``masks`` / ``structure`` notes written by compression).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from robustedge.errors import CheckpointError
from robustedge.io import PathLike, atomic_path, read_json, write_json
from robustedge.models.base import ModelSpec, build_model

WEIGHTS = "model.safetensors"
SPEC = "model.json"
# Bounds on a spec read from a file: a hostile model.json must not make us build a huge model.
MAX_CHANNELS, MAX_SIDE, MAX_CLASSES = 64, 4096, 100_000


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
    """The :class:`ModelSpec` of a run folder (and all of model.json), checked."""
    path = Path(run_dir) / SPEC
    meta = read_json(path)
    try:
        if not isinstance(meta, dict) or not isinstance(meta["spec"], dict):
            raise TypeError("expected a mapping with a 'spec' mapping")
        spec = ModelSpec.from_dict(meta["spec"])
        if not isinstance(spec.name, str) or not isinstance(spec.kwargs, dict):
            raise TypeError("name must be a string and kwargs a mapping")
        c, h, w = spec.input_shape
        if c > MAX_CHANNELS or max(h, w) > MAX_SIDE or spec.num_classes > MAX_CLASSES:
            raise ValueError(f"implausible input {spec.input_shape} / {spec.num_classes} classes")
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"bad model spec in {path}: {e}") from None
    check_factory_name(spec.name, path)
    return spec, meta


def check_factory_name(name: str, source: PathLike) -> None:
    """A ``module.path:factory`` read from a file must name a plain function of a non-standard
    library module (``os:system``, ``subprocess:run``, ``builtins:eval``... are refused before
    anything is imported)."""
    if ":" not in name:
        return
    module, _, attr = name.partition(":")
    dotted = re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module)
    if not dotted or not re.fullmatch(r"[A-Za-z_]\w*", attr) or attr.startswith("__"):
        raise CheckpointError(f"{source}: bad model factory name {name!r}")
    stdlib = getattr(sys, "stdlib_module_names", ())
    if module.split(".")[0] in stdlib or module.split(".")[0] in ("builtins", "antigravity"):
        raise CheckpointError(
            f"{source}: model factory {name!r} is in the Python standard library: refused"
        )


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
    """``torch.load`` restricted to tensors and primitives (never unpickles code).

    Any failure is one line naming the file and the reason; torch's own advice to retry with
    ``weights_only=False`` (i.e. to unpickle the file) is never passed on.
    """
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise CheckpointError(f"missing checkpoint: {path}") from None
    except pickle.UnpicklingError as e:  # a global outside tensors/primitives, or bad pickle
        found = re.search(r"GLOBAL ([\w.<>]+)", str(e))
        if found:
            raise CheckpointError(
                f"refused checkpoint {path}: it needs the Python object {found.group(1)}, "
                "which could run code (only tensors and plain values are loaded)"
            ) from None
        raise CheckpointError(f"corrupt checkpoint {path}: not a torch checkpoint") from None
    except Exception as e:  # corrupt zip, truncated file, ...
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"corrupt checkpoint {path}: {type(e).__name__}: {reason}") from None
