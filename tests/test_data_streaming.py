"""Streamed data: the image folder's decoded cache and a user's torch Dataset, read per batch."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from robustedge import api
from robustedge.attacks.corruptions import corruption_accuracy
from robustedge.data import from_torch
from robustedge.data.folder_cache import CACHE_DIR
from robustedge.data.imagefolder import load_image_folder
from robustedge.data.memory import TorchSource
from robustedge.data.source import ArraySource, ImageSource, sample_positions, seeded_subset
from robustedge.errors import DataError
from robustedge.training.evaluate import streamed_corruptions
from robustedge.training.tensors import TensorImages, as_images


def rgb_folder(root, n=10, size=8, seed=0):
    """Two classes of random RGB PNGs: 'a' dark-ish, 'b' bright-ish; n train, 3 test each."""
    rng = np.random.default_rng(seed)
    for split, k in (("train", n), ("test", 3)):
        for c, lo in (("a", 0), ("b", 128)):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(k):
                px = rng.integers(lo, lo + 128, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(px).save(root / split / c / f"{i:02d}.png")
    return root


def weights(run):
    return load_file(str(run / "model.safetensors"))


def test_a_streamed_source_reads_uint8_rows_divided_by_255():
    u8 = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2) * 10
    src = ArraySource(u8)
    assert len(src) == 2 and src.shape == (2, 3, 2, 2) and src.nbytes == 24 * 4
    # by hand: u8[1, 0, 0, 1] = 13 * 10 = 130 -> 130 / 255
    assert src[1][0, 0, 1] == np.float32(130) / np.float32(255)
    assert src[1, 0, 0, 1] == np.float32(130) / np.float32(255)
    np.testing.assert_array_equal(src[np.array([1, 0])], u8[[1, 0]] / np.float32(255))
    np.testing.assert_array_equal(src[torch.tensor([-1])], src[1:2])
    view = as_images(src)
    assert isinstance(view, TensorImages) and view[0:1].dtype == torch.float32
    with pytest.raises(IndexError):
        src[np.array([2])]


def test_streamed_and_in_memory_training_give_bit_identical_weights(tmp_path):
    root = rgb_folder(tmp_path / "imgs")
    streamed = load_image_folder(root)
    memory = dataclasses.replace(load_image_folder(root, stream=False), name="folder-in-memory")
    assert isinstance(streamed.x_train, ArraySource) and isinstance(memory.x_train, np.ndarray)
    np.testing.assert_array_equal(streamed.x_train[np.arange(20)], memory.x_train)
    settings = dict(model="tiny", epochs=2, batch_size=8, adversary="trades", steps=1, seed=3)
    a = api.train(out=tmp_path / "a", data="imagefolder", data_dir=str(root), **settings)
    b = api.train(out=tmp_path / "b", data=memory, **settings)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert a.history[-1]["loss"] == b.history[-1]["loss"]
    assert a.clean_acc == b.clean_acc and a.robust_acc() == b.robust_acc()


def cache_dirs(root):
    return sorted(p.name for p in (root / CACHE_DIR).iterdir())


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes_never_read_stale(tmp_path):
    root = rgb_folder(tmp_path)
    load_image_folder(root)
    (old,) = cache_dirs(root)
    # an untouched folder reads the cache: tampered bytes show up
    cache = root / CACHE_DIR / old / "train.u8"
    cache.write_bytes(b"\xff" * cache.stat().st_size)
    assert load_image_folder(root).x_train[0].min() == 1.0
    # a rewritten image changes the key: the tampered cache is never read again
    changed = root / "train" / "a" / "00.png"
    Image.fromarray(np.full((8, 8, 3), 51, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))
    second = load_image_folder(root)
    (new,) = cache_dirs(root)
    assert new != old  # the stale cache is deleted
    assert np.all(second.x_train[0] == np.float32(51) / np.float32(255))
    np.testing.assert_array_equal(second.x_train[:], load_image_folder(root, stream=False).x_train)
    # removing a file also changes the key
    (root / "train" / "b" / "09.png").unlink()
    assert len(load_image_folder(root).y_train) == 19 and cache_dirs(root) != [new]


def test_a_corrupt_image_is_one_clear_line_and_leaves_no_cache(tmp_path):
    root = rgb_folder(tmp_path)
    good = (root / "train" / "a" / "01.png").read_bytes()
    (root / "train" / "a" / "01.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    with pytest.raises(DataError) as e:
        load_image_folder(root)
    assert "01.png" in str(e.value) and "\n" not in str(e.value)
    assert cache_dirs(root) == []  # nothing half-written is left to be read later
    (root / "train" / "a" / "01.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read .*01\.png as an image"):
        load_image_folder(root)


class Counting(torch.utils.data.Dataset):
    """A map-style data set of (image, label) that counts its __getitem__ calls."""

    def __init__(self, x, y):
        self.x, self.y, self.calls = x, y, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.calls += 1
        return torch.from_numpy(self.x[i]), int(self.y[i])


def test_a_torch_dataset_streams_one_read_per_image_per_epoch(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(30, 1, 8, 8), dtype=np.uint8)
    y = np.arange(30) % 3
    train, test = Counting(x[:24], y[:24]), Counting(x[24:], y[24:])
    loaders = tuple(torch.utils.data.DataLoader(d, batch_size=5) for d in (train, test))
    data = from_torch(*loaders, name="counting", stream=True)  # a loader stands for its dataset
    assert isinstance(data.x_train, TorchSource) and list(data.y_train) == list(y[:24])
    assert data.x_train[5][0, 0, 0] == np.float32(x[5, 0, 0, 0]) / np.float32(255)
    train.calls = 0
    # the API's (train, test) pair streams
    api.train(out=tmp_path / "run", data=(train, test), model="tiny", epochs=3, batch_size=8)
    assert train.calls <= 24 + 256 + 1 + 3 * 24  # labels, the up-front check, 3 epochs
    train.calls = 0
    api.train(out=tmp_path / "run2", data=data, model="tiny", epochs=3, batch_size=8, steps=1)
    assert train.calls == 3 * 24  # each image once per epoch, read batch by batch
    memory = from_torch(Counting(x[:24], y[:24]), Counting(x[24:], y[24:]), name="mem")
    api.train(out=tmp_path / "mem", data=memory, model="tiny", epochs=3, batch_size=8, steps=1)
    wa, wb = weights(tmp_path / "run2"), weights(tmp_path / "mem")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_streamed_torch_dataset_is_checked_per_batch(tmp_path):
    x = np.full((300, 1, 4, 4), 0.5, dtype=np.float32)
    bad = int(np.setdiff1d(np.arange(300), sample_positions(300))[0])
    x[bad] = 2.0  # outside [0, 1], and outside the sample the data set checks up front
    y = np.arange(300) % 2
    data = from_torch(Counting(x, y), Counting(x[:4], y[:4]), stream=True)
    assert isinstance(data.x_train, ImageSource)
    with pytest.raises(DataError, match=rf"item {bad}: float images must lie in \[0, 1\]"):
        data.x_train[np.arange(300)]


def test_a_streamed_run_exports_with_its_test_split_as_the_transfer_set(tmp_path):
    root = rgb_folder(tmp_path / "imgs", n=6)
    api.train(out=tmp_path / "run", data="imagefolder", data_dir=str(root), model="tiny", epochs=1)
    api.export(tmp_path / "run", formats=("onnx",))
    clean = np.load(tmp_path / "run" / "export" / "eval_clean.npz")
    memory = load_image_folder(root, stream=False)
    np.testing.assert_array_equal(clean["x"], memory.x_test)
    np.testing.assert_array_equal(clean["y"], memory.y_test)


def test_compressing_from_a_streamed_folder_equals_compressing_in_memory(tmp_path):
    root = rgb_folder(tmp_path / "imgs", n=8, size=16)
    common = dict(model="lenet5", epochs=1, batch_size=8, steps=1, seed=1)
    api.train(out=tmp_path / "t", data="imagefolder", data_dir=str(root), **common)
    memory = dataclasses.replace(load_image_folder(root, stream=False), name="folder-mem")
    opts = dict(teacher=str(tmp_path / "t"), sparsity=0.5, epochs=1, batch_size=8, seed=1)
    a = api.compress(out=tmp_path / "a", data_dir=str(root), **opts)
    b = api.compress(out=tmp_path / "b", data=memory, **opts)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert "data: imagefolder" in (tmp_path / "a" / "config.yaml").read_text()  # streamed
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.clean_acc == b.clean_acc


def test_a_seeded_subset_is_the_whole_set_in_order_when_it_fits():
    u8 = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    y = np.arange(10) % 2
    x, yy = seeded_subset(ArraySource(u8), y, 10, seed=0)
    np.testing.assert_array_equal(x[:, 0, 0, 0] * 255, np.arange(10))  # identity
    x, yy = seeded_subset(ArraySource(u8), y, 4, seed=0)
    idx = np.sort(np.random.default_rng(0).permutation(10)[:4])
    np.testing.assert_array_equal(np.rint(x[:, 0, 0, 0] * 255), idx)
    np.testing.assert_array_equal(yy, y[idx])


def test_corruptions_of_a_streamed_set_are_the_size_weighted_mean_over_chunks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()
    u8 = np.random.default_rng(0).integers(0, 256, size=(10, 3, 8, 8), dtype=np.uint8)
    y = np.arange(10) % 3
    names = ["gaussian_noise"]
    got = streamed_corruptions(model, ArraySource(u8), y, seed=5, chunk=4, names=names)
    x = u8 / np.float32(255)
    # by hand: chunks of 4, 4 and 2 images, noise seeds 5, 6 and 7, weights 0.4, 0.4, 0.2
    parts = [
        corruption_accuracy(model, x[i : i + 4], y[i : i + 4], 5 + k, names)
        for k, i in enumerate((0, 4, 8))
    ]
    for s in ("1", "5"):
        want = (
            0.4 * parts[0][names[0]][s] + 0.4 * parts[1][names[0]][s] + 0.2 * parts[2][names[0]][s]
        )
        assert got[names[0]][s] == pytest.approx(want, abs=1e-12)
    assert got["clean"] == pytest.approx(corruption_accuracy(model, x, y, 0, names)["clean"])
