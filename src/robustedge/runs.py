"""Run folders: the one place that reads them.

A run folder holds ``model.safetensors`` + ``model.json`` (weights and architecture),
``config.yaml`` (the resolved config), ``metrics.json`` and, while training,
``checkpoint/last.pt``. Train, eval, compress, export and the recipe all load runs here:
model + config + data, with the shapes checked against each other.

This module sits just above ``models`` and ``data`` (it needs both to load a run) and below
``training``; see docs/architecture.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

from robustedge.data import Dataset, load_dataset
from robustedge.errors import CheckpointError, RobustEdgeError
from robustedge.io import PathLike, read_json
from robustedge.models import ModelSpec, load_model, load_spec

CONFIG = "config.yaml"
METRICS = "metrics.json"


class LoadedRun(NamedTuple):
    """A run folder loaded and checked: model (eval mode, CPU), spec, model.json, config, data."""

    model: Any
    spec: ModelSpec
    config: Dict[str, Any]
    data: Dataset
    meta: Dict[str, Any]


def read_config(run: PathLike) -> Dict[str, Any]:
    """``RUN/config.yaml`` as a dict (safe YAML); CheckpointError when missing or corrupt."""
    from robustedge.io import load_yaml

    path = Path(run) / CONFIG
    try:
        cfg = load_yaml(path.read_text(), str(path))  # non-core YAML tags refused
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(f"missing {path}: is {run} a robustedge run folder?") from None
    except (RobustEdgeError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"corrupt {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"corrupt {path}: not a mapping")
    return cfg


def read_metrics(run: PathLike) -> Dict[str, Any]:
    return read_json(Path(run) / METRICS)


def check_out_dir(out: PathLike, resume: bool = False) -> None:
    """Refuse an output folder that is a file, or non-empty unless resuming."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RobustEdgeError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise RobustEdgeError(f"--out {out} is not empty (use --resume to continue that run)")


def run_data(
    cfg: Dict[str, Any], data: Optional[str] = None, data_dir: Optional[str] = None
) -> Dataset:
    """The data set of a run's config, or ``data`` (then ``data_dir`` goes with it)."""
    if data:
        return load_dataset(data, data_dir)
    return load_dataset(cfg.get("data", "digits"), data_dir or cfg.get("data_dir"))


def check_fits(run: PathLike, spec: ModelSpec, data: Dataset) -> None:
    """The model's input shape and class count must be the data set's."""
    if data.input_shape != spec.input_shape or data.num_classes != spec.num_classes:
        raise RobustEdgeError(
            f"{run}: model input {spec.input_shape} with {spec.num_classes} classes does not "
            f"match data set '{data.name}' ({data.input_shape}, {data.num_classes} classes)"
        )


def load_run(run: PathLike, model: Any = None, data: Optional[Dataset] = None) -> LoadedRun:
    """Load a finished run folder: weights checked against the architecture (``model`` may be
    given when it cannot be rebuilt from the spec), config, and its data (or ``data``)."""
    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(f"run folder not found: {run}")
    _, meta = load_spec(run)
    model, spec = load_model(run, model)
    cfg = read_config(run)
    data = data if data is not None else run_data(cfg)
    check_fits(run, spec, data)
    return LoadedRun(model.cpu().eval(), spec, cfg, data, meta)
