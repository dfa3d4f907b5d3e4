"""A user's own arrays from one .npz file (read with ``allow_pickle=False``).

Keys: ``x_train, y_train, x_test, y_test``, or ``x, y`` (then a fixed stratified split).
Optional: ``num_classes`` (scalar) and ``class_names`` (strings). Images may be
N x C x H x W, N x H x W x C (detected when the last dim is 1, 3 or 4 and the second is not)
or N x H x W (one channel). uint8 images are divided by 255; float images must lie in [0, 1].
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from robustedge.data.base import DATASETS, Dataset, stratified_split
from robustedge.data.files import require_data_dir
from robustedge.errors import DataError

logger = logging.getLogger(__name__)

SPLIT_SEED = 20212
TEST_FRACTION = 0.2
CHANNEL_SIZES = (1, 3, 4)
MAX_UNPACKED_BYTES = 4 << 30  # 4 GiB: bigger archives are refused before anything is unpacked


def find_npz(path: Path) -> Path:
    """``path`` itself if it is a file, else the single .npz file in the folder ``path``."""
    if path.is_file():
        return path
    found = sorted(path.glob("*.npz"))
    if len(found) != 1:
        what = "no .npz file" if not found else f"{len(found)} .npz files (need exactly one)"
        raise DataError(f"npz: {what} in {path}; pass --data-dir path/to/file.npz")
    return found[0]


def read_npz(path: Path) -> Dict[str, np.ndarray]:
    """All arrays of an .npz file; DataError if unreadable, too large once unpacked (a zip
    bomb), or it holds pickled objects (never unpickled)."""
    try:
        with zipfile.ZipFile(path) as z:
            unpacked = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise DataError(f"npz: cannot read {path} as an .npz file ({e})") from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise DataError(
            f"npz: {path} unpacks to {unpacked:,} bytes (limit {MAX_UNPACKED_BYTES:,}): refused"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            return {k: f[k] for k in f.files}
    except ValueError as e:  # object arrays need pickle, which is refused
        raise DataError(f"npz: {path}: {str(e).splitlines()[0] if str(e) else 'corrupt'}") from None
    except Exception as e:  # any malformed archive or array header: one clear line
        reason = str(e).splitlines()[0][:200] if str(e) else ""
        raise DataError(f"npz: cannot read {path} ({type(e).__name__}: {reason})") from None


def to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    """Images as float32 N x C x H x W in [0, 1] from NCHW, NHWC or NHW, uint8 or float."""
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim != 4:
        raise DataError(
            f"{what}: images must be N x C x H x W, N x H x W x C or N x H x W, got {x.shape}"
        )
    elif x.shape[-1] in CHANNEL_SIZES and x.shape[1] not in CHANNEL_SIZES:
        x = np.transpose(x, (0, 3, 1, 2))
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{what}: images must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{what}: images contain NaN or inf")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise DataError(
            f"{what}: float images must lie in [0, 1], got [{x.min():g}, {x.max():g}] "
            "(scale them, or store uint8)"
        )
    return x


def to_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    """Labels as int64 of length ``n``; DataError if not 1-D non-negative integers."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: labels must be 1-D integers, got {y.dtype} {y.shape}")
    if len(y) != n:
        raise DataError(f"{what}: {len(y)} labels for {n} images")
    if len(y) and y.min() < 0:
        raise DataError(f"{what}: labels must be >= 0, got {y.min()}")
    return y.astype(np.int64)


def _splits(arrays: Dict[str, np.ndarray], path: Path) -> Tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test) from either key layout, converted and checked."""
    full = ("x_train", "y_train", "x_test", "y_test")
    if all(k in arrays for k in full):
        out = []
        for split in ("train", "test"):
            x = to_nchw(arrays[f"x_{split}"], f"npz {path.name} x_{split}")
            out += [x, to_labels(arrays[f"y_{split}"], len(x), f"npz {path.name} y_{split}")]
        return tuple(out)
    if "x" in arrays and "y" in arrays:
        x = to_nchw(arrays["x"], f"npz {path.name} x")
        y = to_labels(arrays["y"], len(x), f"npz {path.name} y")
        tr, te = stratified_split(y, TEST_FRACTION, SPLIT_SEED)
        return x[tr], y[tr], x[te], y[te]
    raise DataError(
        f"npz: {path} needs arrays x_train, y_train, x_test, y_test (or x, y); "
        f"it has {', '.join(sorted(arrays)) or 'none'}"
    )


def _num_classes(arrays: Dict[str, np.ndarray], y_train: np.ndarray, path: Path) -> int:
    """The declared ``num_classes``, else ``largest label + 1`` provided every one of those
    classes has training samples (labels 0..99 on 10 images are refused, not a 100-class
    model)."""
    y_max = int(y_train.max())
    if "num_classes" in arrays:
        k = arrays["num_classes"]
        if k.size != 1 or not np.issubdtype(k.dtype, np.integer) or not y_max < int(k) <= 100_000:
            raise DataError(
                f"npz: {path}: num_classes must be one integer > the largest label {y_max}"
            )
        return int(k)
    inferred = y_max + 1
    empty = np.flatnonzero(np.bincount(y_train, minlength=inferred) == 0)
    if len(empty):
        shown = ", ".join(str(c) for c in empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise DataError(
            f"npz: {path}: {inferred} classes inferred from the largest label {y_max}, but "
            f"{len(empty)} of them have no training sample (classes {shown}); relabel to "
            "0..K-1, or store the class count as num_classes in the file"
        )
    if inferred < 2:
        raise DataError(f"npz: {path}: labels hold a single class (need >= 2)")
    return inferred


@DATASETS.register("npz")
def load_npz(data_dir: Optional[object] = None) -> Dataset:
    """A user's arrays from DATA_DIR (an .npz file, or a folder holding exactly one)."""
    path = find_npz(require_data_dir(data_dir, "npz"))
    arrays = read_npz(path)
    x_tr, y_tr, x_te, y_te = _splits(arrays, path)
    if len(y_tr) == 0 or len(y_te) == 0:
        raise DataError(f"npz: {path}: train and test splits must both be non-empty")
    if y_te.max() > y_tr.max() and "num_classes" not in arrays:
        raise DataError(
            f"npz: {path}: test label {int(y_te.max())} is larger than every training label "
            f"(max {int(y_tr.max())}): that class has no training sample"
        )
    num_classes = _num_classes(arrays, y_tr, path)
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or len(names) != num_classes):
        raise DataError(f"npz: {path}: class_names must list {num_classes} names")
    how = "declared" if "num_classes" in arrays else "inferred from the labels"
    logger.info(
        "npz: %s: %d train / %d test, %d classes (%s)",
        path,
        len(y_tr),
        len(y_te),
        num_classes,
        how,
    )
    return Dataset(
        name="npz",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        num_classes=num_classes,
        class_names=None if names is None else [str(n) for n in names],
        extras={"source": str(path)},
    )
