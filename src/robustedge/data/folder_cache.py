"""The decode-once cache of an image folder: uint8 N x C x H x W files read row by row.

A cache lives in ``ROOT/.robustedge-cache/imagefolder-<key>/`` (when ROOT is not writable:
``~/.cache/robustedge/imagefolder/<hash of ROOT>/imagefolder-<key>/``) and holds
``meta.json`` (format version, colour mode, size, image counts) and one ``<split>.u8`` per
split. ``key`` is the sha256 of every image's path relative to ROOT, byte size and mtime (ns)
and the format version: when a file is added, removed, rewritten or touched, the key changes,
the old cache is never opened again, and a new one is decoded (then the stale ones are
deleted). A cache is built in a temporary folder and renamed into place when complete, so an
interrupted build leaves nothing that is read later.

A split is read through :class:`RowFile`: each batch's rows with ``os.pread``, not a memory
map, so the pages of images read earlier are not counted in (nor held by) the process's
resident memory: what stays resident is the batch, whatever the size of the set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from robustedge.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["CACHE_DIR", "RowFile", "cache_key", "open_cache"]

CACHE_DIR = ".robustedge-cache"
VERSION = 1
PREFIX = "imagefolder-"

# (mode, (width, height)) of a set; the uint8 C x H x W pixels of one file
Geometry = Tuple[str, Tuple[int, int]]
Decode = Callable[[Path, str, Tuple[int, int]], np.ndarray]


class RowFile:
    """A read-only uint8 array of ``shape`` (N x ...) stored row after row in ``path``:
    ``rows[idx]`` (an int64 index array) reads those rows with ``os.pread`` (one read for a
    run of consecutive rows)."""

    dtype = np.dtype(np.uint8)

    def __init__(self, path: Path, shape: Tuple[int, ...]) -> None:
        self.path, self.shape = Path(path), tuple(int(s) for s in shape)
        self.ndim = len(self.shape)
        self.row = int(np.prod(self.shape[1:]))
        self._fd: Optional[int] = None
        self._pid = -1

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _pread(self, start: int, count: int) -> bytes:
        data = os.pread(self._file(), count * self.row, start * self.row)
        if len(data) != count * self.row:
            raise DataError(f"imagefolder: the cache {self.path} is truncated; delete it")
        return data

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), *self.shape[1:]), dtype=np.uint8)
        flat = out.reshape(len(idx), self.row)
        if len(idx) and bool(np.all(np.diff(idx) == 1)):
            flat[:] = np.frombuffer(self._pread(int(idx[0]), len(idx)), np.uint8).reshape(
                flat.shape
            )
            return out
        for j, i in enumerate(idx):
            flat[j] = np.frombuffer(self._pread(int(i), 1), np.uint8)
        return out

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def cache_key(root: Path, splits: Mapping[str, Sequence[Path]]) -> str:
    """sha256 (hex) of each split's files: path relative to ``root``, size, mtime_ns."""
    h = hashlib.sha256(f"robustedge imagefolder cache v{VERSION}\n".encode())
    for split, files in sorted(splits.items()):
        for f in files:
            st = f.stat()
            rel = f.relative_to(root).as_posix()
            h.update(f"{split}\0{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_parent(root: Path) -> Path:
    """ROOT/.robustedge-cache when it can be created, else a per-ROOT folder under ~/.cache."""
    local = root / CACHE_DIR
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    home = Path.home() / ".cache" / "robustedge" / "imagefolder" / tag
    home.mkdir(parents=True, exist_ok=True)
    return home


def _load(folder: Path, splits: Mapping[str, Sequence[Path]]) -> Optional[Dict[str, object]]:
    """The cache in ``folder`` (meta + RowFiles) when complete and of this listing; else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("version") != VERSION:
        return None
    channels = 1 if meta["mode"] == "L" else 3
    width, height = meta["size"]
    arrays: Dict[str, object] = {"mode": meta["mode"], "size": (width, height)}
    for split, files in splits.items():
        path = folder / f"{split}.u8"
        shape = (len(files), channels, height, width)
        if meta["counts"].get(split) != len(files) or not path.is_file():
            return None
        if path.stat().st_size != int(np.prod(shape)):
            return None
        arrays[split] = RowFile(path, shape)
    return arrays


def _build(
    tmp: Path, splits: Mapping[str, Sequence[Path]], geometry: Geometry, decode: Decode
) -> None:
    """Decode every image of every split into ``tmp/<split>.u8``, one at a time."""
    mode, size = geometry
    for split, files in splits.items():
        with open(tmp / f"{split}.u8", "wb") as f:
            for path in files:
                f.write(np.ascontiguousarray(decode(path, mode, size), dtype=np.uint8).tobytes())
        logger.info("imagefolder cache: %s: %d images decoded", split, len(files))
    meta = {
        "version": VERSION,
        "mode": mode,
        "size": list(size),
        "counts": {s: len(f) for s, f in splits.items()},
    }
    (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True))


def open_cache(
    root: Path,
    splits: Mapping[str, Sequence[Path]],
    geometry: Callable[[], Geometry],
    decode: Decode,
) -> Dict[str, object]:
    """``{"mode", "size", <split>: uint8 N x C x H x W RowFile}`` of the images of ``splits``,
    read from the cache of this exact listing or decoded into a new one (see the module).
    ``geometry()`` is called only for a new cache."""
    key = cache_key(root, splits)
    parent = _cache_parent(root)
    folder = parent / f"{PREFIX}{key[:32]}"
    found = _load(folder, splits)
    if found is not None:
        logger.info("imagefolder: using the decoded cache %s", folder)
        return found
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=parent))
    try:
        _build(tmp, splits, geometry(), decode)
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete one of the same key
        try:
            os.rename(tmp, folder)
        except OSError:  # another process renamed its complete build first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _remove_stale(parent, keep=folder)
    found = _load(folder, splits)
    if found is None:
        raise DataError(f"imagefolder: the decoded cache {folder} could not be read back")
    return found


def _remove_stale(parent: Path, keep: Path) -> None:
    """Delete the caches of earlier listings of the same folder."""
    stale: List[Path] = [p for p in parent.glob(f"{PREFIX}*") if p != keep and p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
        logger.info("imagefolder: removed the stale cache %s", p)
