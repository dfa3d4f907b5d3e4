"""Data set registry: ``load_dataset(name, data_dir)`` returns a :class:`Dataset`."""

from __future__ import annotations

import os
from typing import Optional

from robustedge.data import digits as _digits  # noqa: F401  (registers)
from robustedge.data.base import DATASETS, Dataset, check_arrays, stratified_split

DATA_DIR_ENV = "ROBUSTEDGE_DATA_DIR"

__all__ = ["DATASETS", "Dataset", "check_arrays", "stratified_split", "load_dataset"]


def load_dataset(name: str, data_dir: Optional[str] = None) -> Dataset:
    """Load a registered data set; file-based ones read ``data_dir`` or $ROBUSTEDGE_DATA_DIR."""
    loader = DATASETS.get(name)
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV)
    return loader(data_dir=data_dir)
