"""A folder of images per class: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*``.

Registered as the ``imagefolder`` data set (``--data imagefolder --data-dir ROOT``). Files
ending in .png, .jpg, .jpeg, .bmp, .gif, .tif(f) or .webp are read with Pillow. Classes are
the sub-folders of ``train`` in sorted order (label = position); every class of ``test`` must
be one of them. Images become one-channel when every image is greyscale, else RGB; each is
resized (bilinear) to the size of the first training image (sorted by class, then file name)
and scaled to [0, 1] by dividing by 255. Files outside ROOT (symlinks) and images over
``MAX_PIXELS`` are refused; the whole set is held in memory as float32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from robustedge.data.base import DATASETS, Dataset
from robustedge.data.files import require_data_dir
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


def _read(files: Sequence[Tuple[Path, str]], labels: dict, mode: str, size, what: str):
    """Images decoded into one float32 N x C x H x W array (uint8 / 255) and their labels."""
    from PIL import Image

    channels = 1 if mode == "L" else 3
    x = np.empty((len(files), channels, size[1], size[0]), dtype=np.float32)
    y = np.empty(len(files), dtype=np.int64)
    for i, (path, c) in enumerate(files):
        with _open(path) as img:
            try:
                img = img.convert(mode)
                if img.size != size:
                    img = img.resize(size, Image.BILINEAR)
                a = np.asarray(img, dtype=np.uint8)
            except (OSError, ValueError) as e:
                raise DataError(f"imagefolder: cannot decode {path} ({e})") from None
        x[i] = (a[None] if a.ndim == 2 else a.transpose(2, 0, 1)) / np.float32(255.0)
        y[i] = labels[c]
    logger.info("imagefolder: %s: %d images of %dx%d (%s)", what, len(y), size[0], size[1], mode)
    return x, y


@DATASETS.register("imagefolder")
def load_image_folder(data_dir: Optional[object] = None) -> Dataset:
    """The images of DATA_DIR/train/<class>/ and DATA_DIR/test/<class>/ (see the module)."""
    root = require_data_dir(data_dir, "imagefolder")
    classes, train = _listing(root, "train")
    test_classes, test = _listing(root, "test")
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataError(f"imagefolder: test classes {unknown} have no folder under {root}/train")
    if len(classes) < 2:
        raise DataError(f"imagefolder: {root}/train holds one class; need at least two")
    with _open(train[0][0]) as first:
        size = first.size
    modes = set()
    for path, _ in train + test:
        with _open(path) as img:
            modes.add(img.mode)
    mode = "L" if modes <= set(GREY_MODES) else "RGB"
    labels = {c: i for i, c in enumerate(classes)}
    x_tr, y_tr = _read(train, labels, mode, size, "train")
    x_te, y_te = _read(test, labels, mode, size, "test")
    return Dataset(
        name="imagefolder",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        num_classes=len(classes),
        class_names=classes,
        extras={"source": str(root)},
    )
