"""Data set registry: ``load_dataset(name, data_dir)`` returns a :class:`Dataset`."""

from __future__ import annotations

import os
from typing import Optional

from robustedge.data import cifar as _cifar  # noqa: F401  (registers)
from robustedge.data import digits as _digits  # noqa: F401  (registers)
from robustedge.data import idx as _idx  # noqa: F401  (registers)
from robustedge.data import imagefolder as _imagefolder  # noqa: F401  (registers)
from robustedge.data import npz as _npz  # noqa: F401  (registers)
from robustedge.data import synthetic as _synthetic  # noqa: F401  (registers)
from robustedge.data.base import DATASETS, Dataset, check_arrays, stratified_split
from robustedge.data.download import DOWNLOADS, download
from robustedge.data.files import DATA_DIR_ENV
from robustedge.data.memory import from_arrays, from_torch, register_dataset
from robustedge.data.source import ArraySource, ImageSource, seeded_subset

__all__ = [
    "DATASETS",
    "DOWNLOADS",
    "download",
    "DATA_DIR_ENV",
    "Dataset",
    "check_arrays",
    "stratified_split",
    "load_dataset",
    "from_arrays",
    "from_torch",
    "register_dataset",
    "ArraySource",
    "ImageSource",
    "seeded_subset",
]


def load_dataset(name: str, data_dir: Optional[str] = None) -> Dataset:
    """Load a registered data set; file-based ones read ``data_dir`` or $ROBUSTEDGE_DATA_DIR."""
    loader = DATASETS.get(name)
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV)
    return loader(data_dir=data_dir)
