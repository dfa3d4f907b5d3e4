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
    """All arrays of an .npz file; DataError if unreadable or it holds pickled objects."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise DataError(f"npz: cannot read {path} as an .npz file ({e})") from None
    except ValueError as e:  # object arrays need pickle, which is refused
        raise DataError(f"npz: {path}: {e}") from None


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


def _num_classes(arrays: Dict[str, np.ndarray], y_max: int, path: Path) -> int:
    if "num_classes" not in arrays:
        return y_max + 1
    k = arrays["num_classes"]
    if k.size != 1 or not np.issubdtype(k.dtype, np.integer) or int(k) <= y_max:
        raise DataError(f"npz: {path}: num_classes must be one integer > the largest label {y_max}")
    return int(k)


@DATASETS.register("npz")
def load_npz(data_dir: Optional[object] = None) -> Dataset:
    """A user's arrays from DATA_DIR (an .npz file, or a folder holding exactly one)."""
    path = find_npz(require_data_dir(data_dir, "npz"))
    arrays = read_npz(path)
    x_tr, y_tr, x_te, y_te = _splits(arrays, path)
    if len(y_tr) == 0 or len(y_te) == 0:
        raise DataError(f"npz: {path}: train and test splits must both be non-empty")
    num_classes = _num_classes(arrays, int(max(y_tr.max(), y_te.max())), path)
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or len(names) != num_classes):
        raise DataError(f"npz: {path}: class_names must list {num_classes} names")
    logger.info("npz: %s: %d train / %d test, %d classes", path, len(y_tr), len(y_te), num_classes)
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
