"""A content-addressed cache of onnx2tf conversions (``robustedge.cache.cache_dir("tflite")``).

onnx2tf starts TensorFlow in a fresh process for every conversion (about 14 s of CPU for a
small CNN), and it is deterministic: the same ONNX bytes, options, calibration inputs and
converter versions give the same files. So the key is the sha256 of exactly those (the ONNX
file, onnx2tf's options, the calibration and sample arrays with their shapes, onnx2tf's and
TensorFlow's versions); an entry holds onnx2tf's output folder, its log, the ONNX file as
onnx2tf leaves it (it rewrites its input, simplified, in place: a cache hit must too) and the
sha256 of every file, checked on every read (a damaged entry is dropped and converted
again). Entries are written to a temporary folder and renamed; a lock per key makes concurrent
exports of the same model convert once. ``ROBUSTEDGE_CACHE_TFLITE=off`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np

from robustedge.cache import cache_dir
from robustedge.hashing import sha256_file

logger = logging.getLogger(__name__)

KIND = "tflite"
OUT, LOG, FILES = "onnx2tf_out", "onnx2tf.log", "files.json"
ONNX = "input.onnx"  # the input file as onnx2tf left it (it rewrites it, simplified, in place)
# The distributions a conversion's output depends on (TensorFlow ships under several names).
CONVERTERS = (("onnx2tf",), ("tensorflow", "tensorflow-cpu", "tensorflow_cpu"))


def conversion_key(
    onnx_path: Path, flags: List[str], calib: Optional[np.ndarray], sample: Optional[np.ndarray]
) -> str:
    """The sha256 naming one conversion: everything its output depends on."""
    h = hashlib.sha256()
    meta = {
        "stem": onnx_path.stem,
        "flags": flags,
        "versions": [_version(names) for names in CONVERTERS],
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(Path(onnx_path).read_bytes())
    for arr in (calib, sample):
        a = None if arr is None else np.ascontiguousarray(arr, dtype=np.float32)
        h.update(b"none" if a is None else repr(a.shape).encode() + a.tobytes())
    return h.hexdigest()


def _version(names: tuple) -> str:
    """``name==version`` of the first of ``names`` that is installed."""
    for name in names:
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return f"{names[0]} not installed"


@contextlib.contextmanager
def conversion_cache(
    onnx_path: Path,
    flags: List[str],
    calib: Optional[np.ndarray],
    sample: Optional[np.ndarray],
    workdir: Path,
) -> Iterator[bool]:
    """Yields True after restoring ``workdir/onnx2tf_out``, ``workdir/onnx2tf.log`` and the
    ONNX file as onnx2tf leaves it (simplified in place) from the cache; else False, and
    stores them when the block (the conversion) succeeds. Either way the caller ends with the
    same files, byte for byte."""
    root = cache_dir(KIND)
    if root is None:
        yield False
        return
    sample = sample if sample is not None and sample.shape[-1] == 3 else None
    key = conversion_key(onnx_path, flags, calib, sample)
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{key}.lock", "w")
    except OSError as err:  # an unwritable cache folder never fails the export itself
        logger.warning("conversion cache %s not usable (%s): converting without it", root, err)
        yield False
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _restore(root / key, workdir, onnx_path):
            logger.info("onnx2tf conversion %s taken from the cache %s", key[:12], root)
            yield True
            return
        yield False
        _store(root / key, workdir, onnx_path)


def _file_hashes(folder: Path) -> Dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _restore(entry: Path, workdir: Path, onnx_path: Path) -> bool:
    """Copy a verified entry into ``workdir``; False (and the entry dropped) when it is
    missing, incomplete or any file's sha256 differs from the one recorded."""
    try:
        recorded = json.loads((entry / FILES).read_text())
    except (OSError, ValueError):
        shutil.rmtree(entry, ignore_errors=True)
        return False
    if not isinstance(recorded, dict) or _file_hashes(entry / "data") != recorded:
        logger.warning("dropping a damaged conversion cache entry %s", entry)
        shutil.rmtree(entry, ignore_errors=True)
        return False
    shutil.rmtree(workdir / OUT, ignore_errors=True)
    onnx_tmp = onnx_path.with_name(f".{onnx_path.name}.cached")
    try:
        shutil.copytree(entry / "data" / OUT, workdir / OUT)
        shutil.copy2(entry / "data" / LOG, workdir / LOG)
        shutil.copy2(entry / "data" / ONNX, onnx_tmp)
        os.replace(onnx_tmp, onnx_path)
    except OSError as err:  # e.g. a full disk: convert instead
        logger.warning("could not copy the cached conversion %s: %s", entry, err)
        shutil.rmtree(workdir / OUT, ignore_errors=True)
        onnx_tmp.unlink(missing_ok=True)
        return False
    return True


def _store(entry: Path, workdir: Path, onnx_path: Path) -> None:
    """Write ``workdir``'s output folder and log and the converted ONNX file as ``entry``
    (temporary folder, then rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        shutil.copytree(workdir / OUT, tmp / "data" / OUT)
        shutil.copy2(workdir / LOG, tmp / "data" / LOG)
        shutil.copy2(onnx_path, tmp / "data" / ONNX)
        (tmp / FILES).write_text(json.dumps(_file_hashes(tmp / "data"), sort_keys=True))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    except OSError as err:  # a full or read-only cache never fails the export itself
        logger.warning("could not store the conversion in the cache %s: %s", entry.parent, err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
