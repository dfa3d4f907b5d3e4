"""The imagefolder data set: ROOT/{train,test}/<class>/<image>, read with Pillow."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from robustedge import api
from robustedge.data import DATASETS, load_dataset
from robustedge.errors import DataError


def write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode).save(path)


def grey_folder(root, n=6, size=6):
    """Two classes: 'bright' (value 200 + i) and 'dark' (value 10 + i), PNG, size x size."""
    for split in ("train", "test"):
        for c, base in (("dark", 10), ("bright", 200)):
            for i in range(n if split == "train" else 2):
                write(root / split / c / f"{i:02d}.png", np.full((size, size), base + i))
    return root


def test_labels_follow_sorted_class_folders_and_pixels_are_divided_by_255(tmp_path):
    d = load_dataset("imagefolder", str(grey_folder(tmp_path)))
    assert "imagefolder" in DATASETS and d.name == "imagefolder"
    assert d.class_names == ["bright", "dark"] and d.num_classes == 2
    assert d.input_shape == (1, 6, 6) and d.x_train.dtype == np.float32
    assert list(d.y_train) == [0] * 6 + [1] * 6 and len(d.y_test) == 4
    # by hand: bright/03.png holds 203 everywhere, dark/00.png holds 10
    assert d.x_train[3].min() == d.x_train[3].max() == np.float32(203) / np.float32(255)
    assert d.x_train[6, 0, 0, 0] == np.float32(10) / np.float32(255)


def test_rgb_and_other_sizes_are_converted_and_resized_to_the_first_image(tmp_path):
    root = grey_folder(tmp_path, size=4)
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red, twice the size of the first image
    write(root / "train" / "dark" / "zz.jpg", rgb)
    d = load_dataset("imagefolder", str(root))
    assert d.input_shape == (3, 4, 4)  # one RGB image makes the whole set RGB
    red = d.x_train[list(d.y_train).index(1) + 6]  # the last 'dark' image
    assert red.shape == (3, 4, 4) and red[0].min() > 0.95 and red[1:].max() < 0.05
    grey = d.x_train[0]  # a greyscale image becomes three equal channels
    np.testing.assert_array_equal(grey[0], grey[1])


def test_mistakes_are_one_clear_line(tmp_path):
    with pytest.raises(DataError, match="imagefolder: .*train is not a folder"):
        load_dataset("imagefolder", str(tmp_path))
    root = grey_folder(tmp_path / "a")
    write(root / "test" / "cat" / "0.png", np.zeros((6, 6)))
    with pytest.raises(DataError, match=r"test classes \['cat'\] have no folder"):
        load_dataset("imagefolder", str(root))
    root = grey_folder(tmp_path / "b")
    (root / "train" / "dark" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read .*bad.png as an image"):
        load_dataset("imagefolder", str(root))
    root = grey_folder(tmp_path / "c")
    write(tmp_path / "outside.png", np.zeros((6, 6)))
    os.symlink(tmp_path / "outside.png", root / "train" / "dark" / "link.png")
    with pytest.raises(DataError, match="points outside"):
        load_dataset("imagefolder", str(root))


def test_non_images_are_skipped(tmp_path):
    root = grey_folder(tmp_path)
    (root / "train" / "dark" / "notes.txt").write_text("hello")
    assert len(load_dataset("imagefolder", str(root)).y_train) == 12


def test_training_from_an_image_folder_records_it_for_reloading(tmp_path):
    root = grey_folder(tmp_path / "imgs", n=8, size=8)
    t = api.train(
        out=tmp_path / "run",
        data="imagefolder",
        data_dir=str(root),
        model="tiny",
        epochs=1,
        steps=1,
    )
    loaded = api.load_run(t.run)  # by path alone: data set name and folder recorded
    assert loaded.data.name == "imagefolder" and loaded.data.input_shape == (1, 8, 8)
    assert loaded.config["data_dir"] == str(root)
