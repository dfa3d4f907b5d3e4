"""The bundle format shared by the host (builder) and the board (runner). stdlib only.

A bundle is one folder (or a .tar of it)::

    run_bundle.py          entry script: python3 run_bundle.py --out results.json
    manifest.json          sha256 + size of every other file, input layout, quant params,
                           the host's parity metrics, versions
    square_core.py         numpy-only Square attack, loaded by file path
    models/<file>          .tflite / .onnx artifacts
    data/<set>.npz         evaluation sets: x N x C x H x W float32 in [0, 1], y int64
    lib/robustedge/...     the runner code (robustedge.device + its two stdlib helpers)

``verify_bundle`` checks every listed file against its sha256 before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Union

from robustedge.errors import RobustEdgeError

MANIFEST = "manifest.json"
SCHEMA = "robustedge.bundle/1"
ENTRY = "run_bundle.py"
SQUARE = "square_core.py"


class BundleError(RobustEdgeError):
    """A tampered, incomplete or mismatched bundle: the runner refuses it."""


def sha256_file(path: Union[str, os.PathLike], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(bundle: Union[str, os.PathLike]) -> Dict[str, Any]:
    path = Path(bundle) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"not a bundle: {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"corrupt bundle manifest {path}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise BundleError(f"{path} is not a {SCHEMA} manifest")
    return manifest


def verify_bundle(bundle: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Check every file the manifest lists (present, size, sha256); return the manifest.

    Raises ``BundleError`` naming the first bad file: a tampered or incomplete bundle never runs.
    """
    root = Path(bundle)
    manifest = read_manifest(root)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"bundle manifest in {root} lists no files")
    for rel, meta in sorted(files.items()):
        path = root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(f"bundle manifest names a path outside the bundle: {rel}")
        if not path.is_file():
            raise BundleError(f"incomplete bundle: {rel} is missing")
        if path.stat().st_size != meta.get("bytes"):
            raise BundleError(
                f"tampered bundle: {rel} has {path.stat().st_size} bytes, "
                f"manifest says {meta.get('bytes')}"
            )
        if sha256_file(path) != meta.get("sha256"):
            raise BundleError(f"tampered bundle: sha256 of {rel} does not match the manifest")
    return manifest


def file_entry(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


def swap_in_bundle(stage: Path, out: Path) -> None:
    """Rename the finished folder ``stage`` onto ``out``; an old bundle is replaced only at the
    end, and a folder that is not a bundle is never overwritten."""
    if out.exists() and not (out / MANIFEST).is_file():
        raise RobustEdgeError(f"{out} exists and is not a bundle: not overwriting it")
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)
