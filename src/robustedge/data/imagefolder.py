r"""A folder of images per class: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*``.

Registered as the ``imagefolder`` data set (``--data imagefolder --data-dir ROOT``). Files
ending in .png, .jpg, .jpeg, .bmp, .gif, .tif(f) or .webp are read with Pillow. Classes are
the sub-folders of ``train`` in sorted order (label = position); every class of ``test`` must
be one of them. Images become one-channel when every image is greyscale, else RGB; each is
resized (bilinear) to the size of the first training image (sorted by class, then file name)
and scaled to [0, 1] by dividing by 255. Files outside ROOT (symlinks) and images over
``MAX_PIXELS`` are refused.

Streamed (the default, and what ``--data imagefolder`` does): every image is decoded once into
a uint8 cache next to the data (:mod:`robustedge.data.folder_cache`: keyed by the listing's
paths, sizes and mtimes, rebuilt when any file changes) and the data set's ``x_train`` /
``x_test`` are :class:`~robustedge.data.source.ArraySource`\ s over its files: each batch is
read and divided by 255 when training or evaluation asks for it, so a folder larger than
memory works and the float32 values are the same as in memory. Only the labels are held in
memory. ``load_image_folder(root, stream=False)`` decodes everything into float32 arrays
instead (no cache written).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from robustedge.data.base import DATASETS, Dataset
from robustedge.data.files import require_data_dir
from robustedge.data.folder_cache import open_cache
from robustedge.data.source import ArraySource
from robustedge.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["EXTENSIONS", "MAX_PIXELS", "load_image_folder"]

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_PIXELS = 4096 * 4096
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
SPLITS = ("train", "test")


def _listing(root: Path, split: str) -> Tuple[List[str], List[Tuple[Path, str]]]:
    """(class names, [(file, class)]) of ``root/split``, sorted; files checked inside root."""
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"imagefolder: {folder} is not a folder (need {root}/train and /test)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"imagefolder: {folder} has no class sub-folders")
    base = root.resolve()
    files = []
    for c in classes:
        for f in sorted((folder / c).iterdir()):
            if f.suffix.lower() not in EXTENSIONS or not f.is_file():
                continue
            if not f.resolve().is_relative_to(base):
                raise DataError(f"imagefolder: {f} points outside {root}: refused")
            files.append((f, c))
    if not files:
        raise DataError(f"imagefolder: no images ({', '.join(EXTENSIONS)}) under {folder}")
    return classes, files


def _open(path: Path):
    """The Pillow image of ``path`` (header read only); DataError when unreadable or huge."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"imagefolder: cannot read {path} as an image ({e})") from None
    if img.width * img.height > MAX_PIXELS:
        img.close()
        raise DataError(f"imagefolder: {path} is {img.width}x{img.height}: over {MAX_PIXELS} px")
    return img


def decode(path: Path, mode: str, size: Tuple[int, int]) -> np.ndarray:
    """The pixels of ``path`` in ``mode`` ("L" or "RGB") resized to ``size`` (width, height),
    as uint8 C x H x W; DataError (one line) when the file is not a readable image."""
    from PIL import Image

    with _open(path) as img:
        try:
            img = img.convert(mode)
            if img.size != size:
                img = img.resize(size, Image.BILINEAR)
            a = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise DataError(f"imagefolder: cannot decode {path} ({e})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _read(files: Sequence[Tuple[Path, str]], mode: str, size, what: str) -> np.ndarray:
    """Images decoded into one float32 N x C x H x W array (uint8 / 255)."""
    channels = 1 if mode == "L" else 3
    x = np.empty((len(files), channels, size[1], size[0]), dtype=np.float32)
    for i, (path, _) in enumerate(files):
        x[i] = decode(path, mode, size) / np.float32(255.0)
    logger.info("imagefolder: %s: %d images of %dx%d (%s)", what, len(x), size[0], size[1], mode)
    return x


def _geometry(files: Sequence[Tuple[Path, str]]) -> Tuple[str, Tuple[int, int]]:
    """(mode, size): "L" when every image is greyscale else "RGB"; the first image's size."""
    with _open(files[0][0]) as first:
        size = first.size
    modes = set()
    for path, _ in files:
        with _open(path) as img:
            modes.add(img.mode)
    return ("L" if modes <= set(GREY_MODES) else "RGB"), size


def _scan(root: Path):
    """(classes, train files, test files) of ROOT, checked (see the module)."""
    classes, train = _listing(root, "train")
    test_classes, test = _listing(root, "test")
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataError(f"imagefolder: test classes {unknown} have no folder under {root}/train")
    if len(classes) < 2:
        raise DataError(f"imagefolder: {root}/train holds one class; need at least two")
    return classes, train, test


@DATASETS.register("imagefolder")
def load_image_folder(data_dir: Optional[object] = None, stream: bool = True) -> Dataset:
    """The images of DATA_DIR/train/<class>/ and DATA_DIR/test/<class>/ (see the module):
    streamed from the decoded cache, or with ``stream=False`` decoded into memory."""
    root = require_data_dir(data_dir, "imagefolder")
    classes, train, test = _scan(root)
    labels = {c: i for i, c in enumerate(classes)}
    y = [np.array([labels[c] for _, c in fs], dtype=np.int64) for fs in (train, test)]
    if stream:
        splits = {"train": [f for f, _ in train], "test": [f for f, _ in test]}
        cache = open_cache(root, splits, lambda: _geometry(train + test), decode)
        x_tr, x_te = ArraySource(cache["train"]), ArraySource(cache["test"])
    else:
        mode, size = _geometry(train + test)
        x_tr, x_te = _read(train, mode, size, "train"), _read(test, mode, size, "test")
    return Dataset(
        name="imagefolder",
        x_train=x_tr,
        y_train=y[0],
        x_test=x_te,
        y_test=y[1],
        num_classes=len(classes),
        class_names=classes,
        extras={"source": str(root)},
    )
