"""The in-memory data set every loader returns, and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from robustedge.data.source import Images, ImageSource, sample_positions
from robustedge.errors import DataError
from robustedge.registry import Registry

DATASETS: Registry = Registry("data set")


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays, NCHW float32 in [0, 1] and int64 labels.

    ``x_train`` / ``x_test`` may be :class:`~robustedge.data.source.ImageSource`\\ s (streamed:
    read per batch); labels are always in memory.

    ``extras`` holds optional per-split arrays, e.g. the latent factors of the synthetic set
    (``extras["z_train"]``, ``extras["z_test"]``).
    """

    name: str
    x_train: Images
    y_train: np.ndarray
    x_test: Images
    y_test: np.ndarray
    num_classes: int
    class_names: Optional[Sequence[str]] = None
    extras: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            check_arrays(x, y, f"{self.name} {split}", self.num_classes)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: train and test shapes differ: "
                f"{self.x_train.shape[1:]} vs {self.x_test.shape[1:]}"
            )

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of one input."""
        return tuple(int(s) for s in self.x_train.shape[1:])  # type: ignore[return-value]


def check_arrays(x: Any, y: np.ndarray, what: str, num_classes: int) -> None:
    """Raise DataError unless x is finite N x C x H x W in [0,1] and y matches it.

    A streamed ``x`` (:class:`~robustedge.data.source.ImageSource`) is not read whole: its
    shape and a seeded sample of at most ``source.CHECK_SAMPLE`` images are checked."""
    if x.ndim != 4:
        raise DataError(f"{what}: expected images N x C x H x W, got shape {tuple(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{what}: labels shape {tuple(y.shape)} does not match {len(x)} images")
    if len(x) == 0 or x.size == 0:
        raise DataError(f"{what}: no samples (or empty images {tuple(x.shape)})")
    if isinstance(x, ImageSource):
        x = x[sample_positions(len(x))]
    if not np.isfinite(x).all():
        raise DataError(f"{what}: images contain NaN or inf")
    if x.min() < 0.0 or x.max() > 1.0:
        raise DataError(f"{what}: pixel values must lie in [0, 1], got [{x.min()}, {x.max()}]")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{what}: labels must lie in [0, {num_classes - 1}]")


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with each class split in the same proportion; fixed by seed."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
