"""MNIST and Fashion-MNIST from their standard IDX files (plain or .gz) in a local folder.

IDX format (LeCun's): a 4-byte magic ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the values, big-endian, row-major.
"""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from robustedge.data.base import DATASETS, Dataset
from robustedge.data.files import candidate_dirs, find_first, read_maybe_gzip, require_data_dir
from robustedge.errors import DataError

logger = logging.getLogger(__name__)

IDX_DTYPES: Dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
IMAGE_HW = (28, 28)
MAX_NDIM = 8  # IDX files in use have 1-4 dimensions; numpy allows at most 32 or 64
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_SUBDIRS = ("mnist", "MNIST", "mnist/raw", "MNIST/raw")
FASHION_SUBDIRS = (
    "fashion-mnist",
    "fashion_mnist",
    "FashionMNIST",
    "fashion-mnist/raw",
    "fashion_mnist/raw",
    "FashionMNIST/raw",
)
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def parse_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes into an array of the header's dtype and shape; DataError if malformed."""
    if len(data) < 4:
        raise DataError(f"{what}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in IDX_DTYPES or not 0 < ndim <= MAX_NDIM:
        raise DataError(f"{what}: bad IDX magic number 0x{data[:4].hex()}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{what}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if len(data) - header != expected:
        raise DataError(
            f"{what}: header says {dims} values ({expected} bytes) but the file holds "
            f"{len(data) - header} bytes (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file, plain or gzip-compressed."""
    return parse_idx(read_maybe_gzip(path), str(path))


def _file_names(stem: str) -> Tuple[str, ...]:
    """``stem`` and the common variants: ``.gz``, and ``-idx3-`` written as ``.idx3-``."""
    dotted = stem.replace("-idx", ".idx")
    return (stem, stem + ".gz", dotted, dotted + ".gz")


def _locate(dataset: str, root: Path, subdirs: Sequence[str]) -> Dict[str, Path]:
    """Paths of the four IDX files, all from the first folder holding the train images."""
    root = root.parent if root.is_file() else root  # a path to one of the files
    dirs = candidate_dirs(root, subdirs)
    first = find_first(dirs, _file_names(FILES["train_images"]))
    if first is None:
        looked = ", ".join(str(d) for d in dirs) or str(root)
        raise DataError(f"{dataset}: {FILES['train_images']}[.gz] not found (looked in {looked})")
    folder = first.parent
    paths = {}
    for key, stem in FILES.items():
        found = find_first([folder], _file_names(stem))
        if found is None:
            raise DataError(f"{dataset}: {stem}[.gz] not found in {folder}")
        paths[key] = found
    return paths


def _split(
    dataset: str, images: np.ndarray, labels: np.ndarray, split: str
) -> Tuple[np.ndarray, np.ndarray]:
    """Check one split's arrays and convert them to N x 1 x H x W float32 and int64."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_HW:
        raise DataError(
            f"{dataset} {split}: expected uint8 images N x {IMAGE_HW[0]} x {IMAGE_HW[1]}, "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{dataset} {split}: expected 1-D integer labels, got {labels.shape}")
    if len(labels) != len(images):
        raise DataError(f"{dataset} {split}: {len(labels)} labels for {len(images)} images")
    x = (images.astype(np.float32) / 255.0)[:, None, :, :]
    return x, labels.astype(np.int64)


def load_idx_dataset(
    dataset: str, data_dir: Optional[object], subdirs: Sequence[str], class_names: Sequence[str]
) -> Dataset:
    """Load an MNIST-format data set (60k/10k IDX files) as 1 x 28 x 28 images in [0, 1]."""
    root = require_data_dir(data_dir, dataset)
    paths = _locate(dataset, root, subdirs)
    logger.info("%s: reading IDX files from %s", dataset, paths["train_images"].parent)
    arrays = {key: read_idx(p) for key, p in paths.items()}
    x_tr, y_tr = _split(dataset, arrays["train_images"], arrays["train_labels"], "train")
    x_te, y_te = _split(dataset, arrays["test_images"], arrays["test_labels"], "test")
    return Dataset(
        name=dataset,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        num_classes=len(class_names),
        class_names=list(class_names),
        extras={"source": str(paths["train_images"].parent)},
    )


@DATASETS.register("mnist")
def load_mnist(data_dir: Optional[object] = None) -> Dataset:
    """MNIST digits from DATA_DIR or DATA_DIR/mnist (also MNIST/raw), IDX files plain or .gz."""
    return load_idx_dataset("mnist", data_dir, MNIST_SUBDIRS, [str(i) for i in range(10)])


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(data_dir: Optional[object] = None) -> Dataset:
    """Fashion-MNIST from DATA_DIR/fashion-mnist (also FashionMNIST/raw) or DATA_DIR itself."""
    return load_idx_dataset("fashion-mnist", data_dir, FASHION_SUBDIRS, FASHION_CLASSES)
