"""A bundle from a bare model file (a ``.tflite`` made anywhere) and the user's own data.

No robustedge run stands behind the file, so there is no PyTorch reference: the bundle holds
the file, a fixed seeded subset of the test split as the clean set and, only when a source
``nn.Module`` is given, a transfer set crafted on it (PGD, the export's transfer attack); the
board then runs Square itself (it needs no gradients). Which attacks ran is in the board's
results (``worst_case["attacks"]``). The bundle is built by :func:`build_bundle` from an
export folder written to a temporary directory, so it is checked exactly as a run's is.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from robustedge.data import Dataset, seeded_subset
from robustedge.device.host.bundle import BundleConfig, PathLike, build_bundle
from robustedge.errors import RobustEdgeError
from robustedge.hashing import sha256_file
from robustedge.io import write_json

__all__ = ["bundle_model_file", "eval_subset"]

QUANTIZED = ("int8", "uint8")


def eval_subset(data: Dataset, samples: Optional[int], seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """The test split, or a fixed seeded subset of ``samples`` images of it (in split order):
    :func:`~robustedge.data.seeded_subset`, the draw export makes."""
    if samples is not None and samples < 1:
        raise RobustEdgeError(f"samples must be >= 1, got {samples}")
    n = len(data.x_test) if samples is None else samples
    return seeded_subset(data.x_test, data.y_test, n, seed)


def bundle_model_file(
    model_file: PathLike,
    out: PathLike,
    data: Dataset,
    cfg: Optional[BundleConfig] = None,
    *,
    samples: Optional[int] = None,
    seed: int = 0,
    eps: Optional[float] = None,
    source_model: Any = None,
) -> Path:
    """Write a bundle for the ``.tflite`` file ``model_file`` and the test split of ``data``
    (``samples``: a seeded subset) to ``out``; return it. ``eps``: the Linf budget of the
    board's Square (and of the transfer set); default the evaluation default. ``source_model``:
    an nn.Module the transfer set is crafted on; without one the board runs Square only."""
    src = Path(model_file)
    if src.suffix != ".tflite" or not src.is_file():
        raise RobustEdgeError(f"{src} is not a .tflite file")
    x, y = eval_subset(data, samples, seed)
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(tmp) / "export"
        export_dir.mkdir()
        model = export_dir / src.name
        shutil.copyfile(src, model)
        fmt, art = _artifact(model, data.input_shape)
        sets, attack = _eval_sets(export_dir, x, y, eps, seed, source_model)
        manifest: Dict[str, Any] = {
            "run": src.name,
            "data": data.name,
            "num_classes": data.num_classes,
            "input_shape_nchw": list(data.input_shape),
            "model": src.name,
            "artifacts": {fmt: art},
            "eval_sets": sets,
            "eval_sha256": {k: sha256_file(export_dir / v) for k, v in sets.items()},
            "transfer_attack": attack,
            "square_eps": eps,
        }
        write_json(export_dir / "export.json", manifest)
        formats = (fmt,)
        if cfg is not None and cfg.formats and cfg.formats != formats:
            raise RobustEdgeError(f"{src.name} is {fmt}: formats={list(cfg.formats)} refused")
        cfg = (cfg or BundleConfig()).replace(formats=formats)
        return build_bundle(tmp, out, cfg)


def _artifact(model: Path, nchw: Tuple[int, int, int]) -> Tuple[str, Dict[str, Any]]:
    """(format name, export.json record) of a .tflite file, its I/O read from the file (an
    input shape that fits neither NCHW nor NHWC of the data is one line)."""
    from robustedge.export.runners import make_runner

    runner = make_runner("tflite-int8", model, nchw)
    fmt = "tflite-int8" if runner.input.dtype in QUANTIZED else "tflite-float32"
    record = {
        "file": model.name,
        "sha256": sha256_file(model),
        "bytes": model.stat().st_size,
        "input": runner.input.to_dict(),
        "output": runner.output.to_dict(),
        "parity": {"skipped": True, "passed": None, "note": "bare model file: no reference"},
    }
    return fmt, record


def _eval_sets(
    folder: Path,
    x: np.ndarray,
    y: np.ndarray,
    eps: Optional[float],
    seed: int,
    source_model: Any,
) -> Tuple[Dict[str, str], Dict[str, Any]]:
    """The eval set files and the transfer attack's record ({} without a source model)."""
    if source_model is None:
        np.savez(folder / "eval_clean.npz", x=x.astype(np.float32), y=y.astype(np.int64))
        return {"clean": "eval_clean.npz"}, {}
    from robustedge.attacks.base import DEFAULT_EPS
    from robustedge.export import evalsets

    attack = evalsets.transfer_attack(DEFAULT_EPS if eps is None else eps)
    x_adv = evalsets.pgd_inputs(source_model.eval(), x, y, attack, seed)
    return evalsets.save_eval_sets(folder, x, y, x_adv, attack), evalsets.attack_record(attack)
