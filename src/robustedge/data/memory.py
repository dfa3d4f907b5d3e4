"""A user's own data in memory: arrays, torch data sets, and their entry in ``DATASETS``.

:func:`from_arrays` and :func:`from_torch` build a :class:`~robustedge.data.Dataset` (NCHW
float32 in [0, 1], int64 labels) from numpy arrays or from map-style ``torch.utils.data``
data sets / ``DataLoader``\\ s. :func:`register_dataset` puts such a data set in the
``DATASETS`` registry under its name, so every stage (train, compress, export, bench's
evaluation sets) finds it by that name in this process. A run folder records the name; a later
process registers the same data again (or passes ``data=`` to ``load_run``).

``from_torch(..., stream=True)`` (what ``robustedge.api`` does with a (train, test) pair)
keeps a map-style data set where it is: a :class:`TorchSource` reads ``dataset[i]`` for each
image of each batch when training or evaluation asks for it (a DataLoader stands for its
``dataset``: its sampler, batch size and workers are not used; an iterable-style one is copied
into memory). Only the labels are held in memory: ``dataset.targets`` when it has one of the
right length (torchvision's convention), else one pass of ``dataset[i][1]`` at the start.
Every image read is checked (C x H x W, finite, in [0, 1] or uint8) and must have the first
image's shape. With ``stream=False`` every sample is copied into one float32 array.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np

from robustedge.data.base import DATASETS, Dataset
from robustedge.data.npz import to_labels, to_nchw
from robustedge.data.source import ImageSource
from robustedge.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["InMemory", "TorchSource", "from_arrays", "from_torch", "register_dataset"]


class InMemory:
    """A ``DATASETS`` entry holding one :class:`Dataset` object (``data_dir`` is ignored)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __call__(self, data_dir: Optional[object] = None) -> Dataset:
        return self.dataset


def register_dataset(dataset: Dataset, name: Optional[str] = None) -> str:
    """Register ``dataset`` in ``DATASETS`` under ``name`` (default: its own name) and return
    the name. A name held by another in-memory data set is taken over; a built-in or file-based
    data set's name is refused."""
    if not isinstance(dataset, Dataset):
        raise DataError(
            f"register_dataset takes a robustedge Dataset, got {type(dataset).__name__} "
            "(build one with from_arrays or from_torch)"
        )
    name = name or dataset.name
    if name in DATASETS:
        entry = DATASETS.get(name)
        if not isinstance(entry, InMemory):
            raise DataError(
                f"data set name '{name}' is a registered data set; give your data another name"
            )
        if entry.dataset is dataset:
            return name
        DATASETS.unregister(name)
    DATASETS.register(name, InMemory(dataset))
    return name


def from_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    name: str = "arrays",
    num_classes: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
) -> Dataset:
    """A Dataset of numpy arrays (or tensors): images NCHW, NHWC or NHW, uint8 (divided by 255)
    or float in [0, 1]; integer labels. ``num_classes`` defaults to the largest label + 1."""
    xs, ys = [], []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        xa = to_nchw(np.asarray(x), f"{name} x_{split}")
        xs.append(xa)
        ys.append(to_labels(np.asarray(y), len(xa), f"{name} y_{split}"))
    return _dataset(name, (xs[0], ys[0]), (xs[1], ys[1]), num_classes, class_names)


def _dataset(
    name: str,
    train: Tuple[Any, np.ndarray],
    test: Tuple[Any, np.ndarray],
    num_classes: Optional[int],
    class_names: Optional[Sequence[str]],
) -> Dataset:
    """The Dataset of checked (images, labels) splits; ``num_classes`` defaults to the largest
    label + 1."""
    (x_tr, y_tr), (x_te, y_te) = train, test
    k = num_classes if num_classes is not None else int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(
        name=name,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        num_classes=int(k),
        class_names=None if class_names is None else [str(c) for c in class_names],
    )


def _batches(source: Any) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(images, labels) numpy batches of a DataLoader (any iterable of pairs of batches) or,
    one sample at a time, of a map-style data set (``len`` and ``[i] -> (image, label)``)."""
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        for i in range(len(source)):
            x, y = _pair(source[i], i)
            yield np.asarray(x)[None], np.asarray(y).reshape(1)
        return
    if not isinstance(source, Iterable):
        raise DataError(
            f"expected a torch Dataset (len and [i]) or a DataLoader, got {type(source).__name__}"
        )
    for i, item in enumerate(source):
        x, y = _pair(item, i)
        yield np.asarray(x), np.asarray(y).reshape(-1)


def _pair(item: Any, i: int) -> Tuple[Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(f"item {i} is {type(item).__name__}; expected (image, label)")
    x, y = item[0], item[1]
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    return x, y


def _collect(source: Any, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """All samples of ``source`` as (float32 NCHW in [0, 1], int64 labels), copied batch by
    batch into one array (sized from ``len`` when the source has one)."""
    xs, ys, total = [], [], 0
    for xb, yb in _batches(source):
        xb = xb if xb.ndim == 4 else (xb[:, None] if xb.ndim == 3 else xb)
        if xb.ndim != 4:
            raise DataError(f"{what}: images must be C x H x W (batches N x C x H x W)")
        xs.append(to_nchw(xb, what))
        ys.append(to_labels(yb.astype(np.int64, copy=False), len(xb), what))
        total += len(xb)
    if not total:
        raise DataError(f"{what}: no samples")
    return np.concatenate(xs), np.concatenate(ys)


def from_torch(
    train: Any,
    test: Any,
    name: str = "torch",
    num_classes: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    stream: bool = False,
) -> Dataset:
    """A Dataset of two map-style ``torch.utils.data.Dataset``\\ s (``[i] -> (image, label)``,
    image C x H x W as a tensor or array, float in [0, 1] or uint8) or two ``DataLoader``\\ s
    yielding ``(images, labels)`` batches. Every sample is copied into memory once, or with
    ``stream=True`` map-style data sets are read per batch (:class:`TorchSource`)."""
    if not stream:
        x_tr, y_tr = _collect(train, f"{name} train")
        x_te, y_te = _collect(test, f"{name} test")
        logger.info("%s: %d train / %d test samples from torch", name, len(y_tr), len(y_te))
        return from_arrays(x_tr, y_tr, x_te, y_te, name, num_classes, class_names)
    splits = _streamed(train, f"{name} train"), _streamed(test, f"{name} test")
    return _dataset(name, *splits, num_classes, class_names)


def _map_style(source: Any) -> Optional[Any]:
    """The map-style data set of ``source`` (itself, or a DataLoader's ``dataset``) or None."""
    for d in (source, getattr(source, "dataset", None)):
        if d is not None and hasattr(d, "__getitem__") and hasattr(d, "__len__"):
            try:
                len(d)
            except TypeError:  # an IterableDataset without a length
                continue
            return d
    return None


def _streamed(source: Any, what: str) -> Tuple[Any, np.ndarray]:
    """(images, labels) of ``source``: a TorchSource over its map-style data set, or the
    samples in memory when it has none (an iterable-style data set or loader)."""
    dataset = _map_style(source)
    if dataset is None:
        logger.warning("%s: not a map-style data set: copied into memory", what)
        return _collect(source, what)
    x = TorchSource(dataset, what)
    return x, x.labels()


class TorchSource(ImageSource):
    """The images of a map-style torch data set, read per index (see the module)."""

    def __init__(self, dataset: Any, what: str) -> None:
        self.dataset, self.what = dataset, what
        if len(dataset) == 0:
            raise DataError(f"{what}: no samples")
        self.shape = (len(dataset), *self._image(0).shape)  # type: ignore[assignment]

    def _image(self, i: int) -> np.ndarray:
        x, _ = _pair(self.dataset[i], i)
        x = np.asarray(x)
        x = x[None] if x.ndim == 2 else x
        if x.ndim != 3:
            raise DataError(f"{self.what}: item {i}: image must be C x H x W, got {x.shape}")
        return to_nchw(x[None], f"{self.what} item {i}")[0]

    def read(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *self.shape[1:]), dtype=np.float32)
        for j, i in enumerate(idx):
            img = self._image(int(i))
            if img.shape != out.shape[1:]:
                raise DataError(
                    f"{self.what}: item {int(i)} has shape {img.shape}, item 0 {out.shape[1:]}"
                )
            out[j] = img
        return out

    def labels(self) -> np.ndarray:
        """int64 labels: ``dataset.targets`` when it has one per sample, else read once."""
        n = len(self.dataset)
        targets = getattr(self.dataset, "targets", None)
        if targets is not None and len(targets) == n:
            y = np.asarray(targets.cpu() if hasattr(targets, "cpu") else targets)
        else:
            y = np.array([np.asarray(_pair(self.dataset[i], i)[1]).item() for i in range(n)])
        return to_labels(y.astype(np.int64, copy=False).reshape(-1), n, f"{self.what} labels")
