"""CIFAR-10 from the "python version" batches (cifar-10-batches-py), without unsafe unpickling.

The batches are pickles. They are read with :class:`SafeUnpickler`, which resolves only the
globals needed to rebuild a numpy array (``numpy ... _reconstruct``, ``ndarray``, ``dtype``) and
latin-1 byte strings; any other global (the route to code execution) is refused.
The folder may be given directly or as its parent; ``cifar-10-python.tar.gz`` is read in memory.
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
import tarfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from robustedge.data.base import DATASETS, Dataset
from robustedge.data.files import require_data_dir
from robustedge.errors import DataError

try:  # numpy >= 2 names its core module numpy._core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

logger = logging.getLogger(__name__)

FOLDER = "cifar-10-batches-py"
TARBALL = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
SUBDIRS = (FOLDER, f"cifar10/{FOLDER}", f"cifar-10/{FOLDER}", "cifar10", "cifar-10")
IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles of bytes use it, limited to latin-1."""
    if encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"encoding '{encoding}' is not allowed")
    return codecs.encode(text, "latin1")


_ALLOWED: Dict[Tuple[str, str], Callable[..., Any]] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that only rebuilds builtin containers and numpy arrays (no object arrays)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None


def safe_unpickle(data: bytes, what: str) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (bytes for Python 2 strings)."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any malformed pickle: one clear line for the user
        reason = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"  # one line
        raise DataError(f"{what}: not a valid CIFAR python batch ({reason})") from None


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _batch_dict(obj: Any, what: str) -> Dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(f"{what}: expected a dict, got {type(obj).__name__}")
    return {_text(k): v for k, v in obj.items()}


def parse_batch(data: bytes, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (N x 3 x 32 x 32 uint8 images, N int64 labels), checked."""
    batch = _batch_dict(safe_unpickle(data, what), what)
    for key in ("data", "labels"):
        if key not in batch:
            raise DataError(f"{what}: no '{key}' entry")
    x = batch["data"]
    size = int(np.prod(IMAGE_SHAPE))
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != size:
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{what}: expected uint8 data N x {size}, got {got}")
    try:
        y = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{what}: labels are not integers") from None
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{what}: {y.size} labels for {len(x)} images")
    return x.reshape((-1,) + IMAGE_SHAPE), y


def _class_names(data: bytes, what: str) -> List[str]:
    meta = _batch_dict(safe_unpickle(data, what), what)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DataError(f"{what}: expected 'label_names' with {NUM_CLASSES} entries")
    return [_text(n) for n in names]


class _Source:
    """Reads batch files from a folder or, failing that, from the official tarball."""

    def __init__(self, root: Path) -> None:
        self.folder: Optional[Path] = None
        self.tar: Optional[Path] = None
        if root.is_file() and tarfile.is_tarfile(root):
            self.tar = root
            return
        for d in [root / s for s in SUBDIRS] + [root]:
            if (d / TEST_BATCH).is_file() or (d / TRAIN_BATCHES[0]).is_file():
                self.folder = d
                return
        for tar in (root / TARBALL, root / "cifar10" / TARBALL):
            if tar.is_file():
                self.tar = tar
                return
        raise DataError(
            f"cifar10: no {FOLDER} folder (with {TEST_BATCH}, {TRAIN_BATCHES[0]}, ...) "
            f"or {TARBALL} found in {root} or its subfolders {', '.join(SUBDIRS)}"
        )

    def read_all(self, names: List[str]) -> Dict[str, bytes]:
        if self.folder is not None:
            return {n: self._read_file(self.folder / n) for n in names}
        return self._read_tar(names)

    @staticmethod
    def _read_file(path: Path) -> bytes:
        if not path.is_file():
            raise DataError(f"cifar10: {path.name} not found in {path.parent}")
        return path.read_bytes()

    def _read_tar(self, names: List[str]) -> Dict[str, bytes]:
        out = {}
        try:
            with tarfile.open(self.tar, "r:*") as tar:
                for n in names:
                    member = tar.extractfile(f"{FOLDER}/{n}")
                    if member is None:
                        raise KeyError(n)
                    out[n] = member.read()
        except KeyError:
            raise DataError(f"cifar10: {FOLDER}/{n} not found in {self.tar}") from None
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"cifar10: cannot read {self.tar}: {e}") from None
        return out

    def describe(self, name: str) -> str:
        return str(self.folder / name) if self.folder else f"{self.tar}:{FOLDER}/{name}"


def _stack(parts: List[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    return x, np.concatenate([p[1] for p in parts])


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Optional[object] = None) -> Dataset:
    """CIFAR-10 as 3 x 32 x 32 images in [0, 1]; 5 train batches + test_batch, names from meta."""
    root = require_data_dir(data_dir, "cifar10")
    source = _Source(root)
    names = [*TRAIN_BATCHES, TEST_BATCH, META]
    raw = source.read_all(names)
    logger.info("cifar10: read %d batch files from %s", len(raw), source.describe(""))
    train = [parse_batch(raw[n], source.describe(n)) for n in TRAIN_BATCHES]
    test = [parse_batch(raw[TEST_BATCH], source.describe(TEST_BATCH))]
    x_tr, y_tr = _stack(train)
    x_te, y_te = _stack(test)
    return Dataset(
        name="cifar10",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        num_classes=NUM_CLASSES,
        class_names=_class_names(raw[META], source.describe(META)),
        extras={"source": source.describe("")},
    )
