"""Streamed images: an array-like read one batch at a time, for data sets larger than memory.

An :class:`ImageSource` stands where a :class:`~robustedge.data.Dataset` holds its image array
(``x_train`` / ``x_test``): it has ``len``, ``shape`` (N x C x H x W), ``dtype`` (float32),
``ndim`` and ``nbytes`` (its size as float32), and ``source[index]`` with an int, a slice, an
integer (or boolean) index array or a CPU tensor returns those images as a float32 numpy array
in [0, 1], read then. Labels stay in memory (a Dataset's ``y_*`` are plain arrays).

Two kinds: :class:`ArraySource` over a uint8 (or float) array that need not be resident, e.g.
an image folder's decoded cache (``folder_cache.RowFile``) or an ``np.memmap`` (scaled by
1/255 per batch, the same float32 values as scaling the whole array), and
``memory.TorchSource`` over a user's map-style torch Dataset.

Training, evaluation, compression and the calibration subsets index batches; nothing of
robustedge turns a source into one array except :func:`seeded_subset` (a fixed, seeded draw of
at most ``n`` images, for the sets a bundle carries) and ``np.asarray(source)`` /
``source.astype(dtype)``, which a consumer outside those stages may call: it logs a warning
with the size it materialises.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Tuple, Union

import numpy as np

from robustedge.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["ArraySource", "ImageSource", "Images", "index_array", "seeded_subset"]

# how many images check_arrays reads from a source (a seeded sample; every batch of a
# TorchSource is checked when read)
CHECK_SAMPLE = 256


def index_array(index: Any, n: int) -> np.ndarray:
    """``index`` (slice, integer / boolean array, tensor, list) as int64 positions in [0, n)."""
    if isinstance(index, slice):
        return np.arange(*index.indices(n), dtype=np.int64)
    idx = np.asarray(index.cpu() if hasattr(index, "cpu") else index)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean index of shape {idx.shape} for {n} images")
        return np.flatnonzero(idx)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise IndexError(f"images are indexed by integers, got {idx.dtype}")
    idx = idx.astype(np.int64, copy=False).reshape(-1)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"index out of range for {n} images")
    return np.where(idx < 0, idx + n, idx)


class ImageSource:
    """N x C x H x W float32 images in [0, 1], read per batch (see the module).

    Subclasses set ``shape`` and implement :meth:`read` (positions -> float32 batch)."""

    shape: Tuple[int, int, int, int]
    dtype = np.dtype(np.float32)
    ndim = 4

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def size(self) -> int:
        """Number of float32 values, as numpy's ``size``."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes the images would take in memory as float32."""
        return self.size * 4

    def read(self, idx: np.ndarray) -> np.ndarray:
        """Images at positions ``idx`` (int64, in range) as float32 len(idx) x C x H x W."""
        raise NotImplementedError

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, tuple):  # images first, then within them, as numpy indexes
            head = self[index[0]]
            rest = index[1:]
            return (
                head[rest]
                if isinstance(index[0], (int, np.integer))
                else head[(slice(None),) + rest]
            )
        if isinstance(index, (int, np.integer)):
            return self.read(index_array([index], len(self)))[0]
        return self.read(index_array(index, len(self)))

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray:
        logger.warning(
            "materialising %d streamed images (%.1f MB as float32) for a caller that needs "
            "them whole",
            len(self),
            self.nbytes / 1e6,
        )
        x = self.read(np.arange(len(self), dtype=np.int64))
        return x if dtype is None else x.astype(dtype, copy=False)

    def astype(self, dtype: Any) -> np.ndarray:
        """All images as one array of ``dtype`` (``np.asarray``: read whole, with a warning)."""
        return np.asarray(self, dtype=dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"


class ArraySource(ImageSource):
    """Images of an N x C x H x W array read per batch: uint8 (divided by 255 as float32, the
    same values the in-memory loaders compute) or float32 in [0, 1]. The array may be an
    ``np.memmap`` or any array-like with ``shape``, ``ndim``, ``dtype`` and ``[index array]``
    (a ``folder_cache.RowFile``): only the rows of each batch are read."""

    def __init__(self, array: Any) -> None:
        if array.ndim != 4 or array.dtype not in (np.uint8, np.float32):
            raise DataError(
                f"a streamed array must be N x C x H x W uint8 or float32, got "
                f"{array.dtype} {tuple(array.shape)}"
            )
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)  # type: ignore[assignment]

    def read(self, idx: np.ndarray) -> np.ndarray:
        rows = self.array[idx]
        if rows.dtype == np.uint8:
            return rows / np.float32(255.0)
        return np.array(rows, dtype=np.float32)


# what a Dataset's x_train / x_test hold: an array in memory or a streamed source
Images = Union[np.ndarray, ImageSource]


def sample_positions(n: int, k: int = CHECK_SAMPLE, seed: int = 0) -> np.ndarray:
    """Sorted positions of a seeded sample of at most ``k`` of ``n`` images (all when n <= k)."""
    if n <= k:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def seeded_subset(x: Any, y: np.ndarray, n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A fixed draw of at most ``n`` (images, labels), in memory: positions
    ``default_rng(seed).permutation(len(x))[:n]``, sorted. Works on arrays and sources alike
    (a source reads only the drawn images); the whole set when ``n >= len(x)``."""
    if n >= len(x):
        idx = np.arange(len(x), dtype=np.int64)
    else:
        idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return np.asarray(x[idx], dtype=np.float32), np.asarray(y)[idx]
