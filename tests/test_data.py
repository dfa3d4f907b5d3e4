"""File-based data loaders on tiny files written in the real IDX, CIFAR-batch and npz formats."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from robustedge.data import DATASETS, load_dataset
from robustedge.data.idx import parse_idx
from robustedge.errors import DataError

IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# ---------------------------------------------------------------- IDX (mnist, fashion-mnist)
def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """The IDX encoding of ``arr``: magic 0 0 code ndim, big-endian dims, big-endian values."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[code]
    head = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(dtype).tobytes()


def write_idx_set(folder: Path, gz: bool, n_train: int = 12, n_test: int = 6, seed: int = 0):
    """Four MNIST-format files in ``folder``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, arr in arrays.items():
        data = idx_bytes(arr)
        path = folder / (IDX_STEMS[key] + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize(
    "name,sub,gz",
    [
        ("mnist", "", False),
        ("mnist", "mnist", True),
        ("fashion-mnist", "FashionMNIST/raw", True),
        ("fashion-mnist", "fashion-mnist", False),
    ],
)
def test_idx_loads_real_format(tmp_path, name, sub, gz):
    arrays = write_idx_set(tmp_path / sub if sub else tmp_path, gz)
    data = load_dataset(name, str(tmp_path))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train.shape == (12, 1, 28, 28) and data.x_test.shape == (6, 1, 28, 28)
    np.testing.assert_allclose(data.x_train[:, 0] * 255.0, arrays["train_images"], atol=1e-4)
    np.testing.assert_array_equal(data.y_test, arrays["test_labels"])
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    if name == "fashion-mnist":
        assert data.class_names[9] == "Ankle boot"


def test_data_dir_from_env_or_a_file_path(tmp_path, monkeypatch):
    write_idx_set(tmp_path, gz=False)
    monkeypatch.setenv("ROBUSTEDGE_DATA_DIR", str(tmp_path))
    assert len(load_dataset("mnist").x_train) == 12
    one_file = str(tmp_path / "train-labels-idx1-ubyte")
    assert len(load_dataset("mnist", one_file).x_test) == 6


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "npz"])
def test_no_data_dir_names_flag_and_env(name, monkeypatch):
    monkeypatch.delenv("ROBUSTEDGE_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="--data-dir.*ROBUSTEDGE_DATA_DIR"):
        load_dataset(name)


def test_parse_idx_matches_published_mnist_header():
    # LeCun's page: images 0x00000803, N, 28, 28; labels 0x00000801, N (MSB first)
    head = bytes.fromhex("00000803000000020000001c0000001c")
    pixels = bytes(range(256)) * 6 + bytes(range(32))
    images = parse_idx(head + pixels)
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8
    assert images[0, 0, 5] == 5 and images[1, 27, 27] == (2 * 784 - 1) % 256
    labels = parse_idx(bytes.fromhex("0000080100000003070209"))
    assert labels.tolist() == [7, 2, 9]


def test_parse_idx_reads_header():
    arr = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    out = parse_idx(idx_bytes(arr, 0x0C))
    assert out.shape == (2, 3, 4) and out.dtype.kind == "i"
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(parse_idx(idx_bytes(np.ones((3,)), 0x0D)), np.ones(3))


@pytest.mark.parametrize(
    "mangle,match",
    [
        (lambda b: b"\x08\x03" + b[2:], "magic"),
        (lambda b: b[:2] + b"\x42" + b[3:], "magic"),
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\x00", "holds"),
        (lambda b: b[:3], "too short"),
        (lambda b: b[:9], "truncated IDX header"),
        (lambda b: b[:4] + b"\xff" * 12, "header says"),  # absurd sizes
    ],
)
def test_parse_idx_rejects_corrupt(mangle, match):
    good = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=match):
        parse_idx(mangle(good), "f")


def test_corrupt_gzip(tmp_path):
    write_idx_set(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="gzip"):
        load_dataset("mnist", str(tmp_path))


def test_truncated_plain_file_names_it(tmp_path):
    write_idx_set(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", str(tmp_path))


def test_missing_file_says_which_and_where(tmp_path):
    write_idx_set(tmp_path / "mnist", gz=True)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[\.gz\] not found in .*mnist"):
        load_dataset("mnist", str(tmp_path))


def test_empty_dir_and_missing_dir(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*looked in"):
        load_dataset("fashion-mnist", str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", str(tmp_path / "nope"))


@pytest.mark.parametrize(
    "key,arr,match",
    [
        ("train_labels", np.zeros(11, np.uint8), "11 labels for 12 images"),
        ("test_labels", np.full(6, 12, np.uint8), r"labels must lie in \[0, 9\]"),
        ("train_images", np.zeros((12, 27, 27), np.uint8), "expected uint8 images"),
        ("test_labels", np.zeros((6, 1), np.uint8), "1-D integer labels"),
    ],
)
def test_idx_bad_content(tmp_path, key, arr, match):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / IDX_STEMS[key]).write_bytes(idx_bytes(arr))
    with pytest.raises(DataError, match=match):
        load_dataset("mnist", str(tmp_path))


# ---------------------------------------------------------------- CIFAR-10 python batches
class Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` (BINSTRING), like the official CIFAR files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
CIFAR_NAMES += [b"dog", b"frog", b"horse", b"ship", b"truck"]


def cifar_files(n: int = 3, seed: int = 0, dumps=py2_dumps):
    """name -> bytes of the 7 files of cifar-10-batches-py, ``n`` images per batch."""
    rng = np.random.default_rng(seed)
    files = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(n)],
        }
        files[name] = dumps(batch)
    meta = {b"num_cases_per_batch": n, b"label_names": CIFAR_NAMES, b"num_vis": 3072}
    files["batches.meta"] = dumps(meta)
    return files


def write_cifar(folder: Path, files) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


@pytest.mark.parametrize("dumps", [py2_dumps, lambda o: pickle.dumps(o, protocol=2), pickle.dumps])
def test_cifar_loads_batches(tmp_path, dumps):
    files = cifar_files(dumps=dumps)
    write_cifar(tmp_path / "cifar-10-batches-py", files)
    data = load_dataset("cifar10", str(tmp_path))
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32)
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"
    test = pickle.loads(files["test_batch"], encoding="bytes")
    expect = test[b"data"].reshape(3, 3, 32, 32).astype(np.float32) / 255.0
    np.testing.assert_allclose(data.x_test, expect, atol=1e-6)
    np.testing.assert_array_equal(data.y_test, test[b"labels"])


def test_cifar_from_tarball_and_direct_folder(tmp_path):
    files = cifar_files()
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert load_dataset("cifar10", str(tmp_path)).x_train.shape == (15, 3, 32, 32)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    assert load_dataset("cifar10", str(tarball)).class_names[1] == "automobile"
    write_cifar(tmp_path / "flat", files)
    assert load_dataset("cifar10", str(tmp_path / "flat")).x_test.shape == (3, 3, 32, 32)


class Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_refuses_arbitrary_globals(tmp_path):
    files = cifar_files()
    sentinel = tmp_path / "pwned"
    files["data_batch_2"] = pickle.dumps({b"data": Evil(str(sentinel)), b"labels": []})
    write_cifar(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(DataError, match="data_batch_2.*not allowed"):
        load_dataset("cifar10", str(tmp_path))
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "name,payload,match",
    [
        ("test_batch", b"garbage", "not a valid CIFAR python batch"),
        ("data_batch_1", {b"data": np.zeros((3, 100), np.uint8), b"labels": [0] * 3}, "N x 3072"),
        ("data_batch_4", {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0]}, "1 labels"),
        ("data_batch_5", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}, "labels"),
        ("batches.meta", {b"label_names": [b"a"]}, "label_names"),
        ("test_batch", [1, 2], "expected a dict"),
    ],
)
def test_cifar_bad_batches(tmp_path, name, payload, match):
    files = cifar_files()
    files[name] = payload if isinstance(payload, bytes) else pickle.dumps(payload)
    write_cifar(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(DataError, match=match):
        load_dataset("cifar10", str(tmp_path))


def test_cifar_missing_batch_named(tmp_path):
    files = cifar_files()
    del files["data_batch_3"]
    write_cifar(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(DataError, match="data_batch_3 not found in .*cifar-10-batches-py"):
        load_dataset("cifar10", str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no cifar-10-batches-py folder"):
        load_dataset("cifar10", str(tmp_path / "empty"))


# ---------------------------------------------------------------- npz (a user's arrays)
def npz(tmp_path: Path, **arrays) -> str:
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    return str(path)


def _xy(n: int, shape, dtype=np.uint8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *shape)).astype(dtype)
    if dtype != np.uint8:
        x = x / 255.0
    return x, (np.arange(n) % 4).astype(np.int64)


@pytest.mark.parametrize(
    "shape,dtype,expect",
    [
        ((3, 10, 12), np.float32, (3, 10, 12)),  # N x C x H x W
        ((10, 12, 3), np.uint8, (3, 10, 12)),  # N x H x W x C
        ((10, 12, 1), np.float64, (1, 10, 12)),
        ((1, 10, 12), np.uint8, (1, 10, 12)),
        ((10, 12), np.uint8, (1, 10, 12)),  # N x H x W
        ((4, 6, 6), np.uint8, (4, 6, 6)),  # C=4, NCHW
    ],
)
def test_npz_layouts(tmp_path, shape, dtype, expect):
    x, y = _xy(20, shape, dtype)
    xt, yt = _xy(8, shape, dtype, seed=1)
    data = load_dataset("npz", npz(tmp_path, x_train=x, y_train=y, x_test=xt, y_test=yt))
    assert data.input_shape == expect and data.num_classes == 4
    assert data.x_train.dtype == np.float32 and data.x_train.max() <= 1.0
    first = x[0].astype(np.float32) / (255.0 if dtype == np.uint8 else 1.0)
    if len(shape) == 3 and shape[-1] in (1, 3) and shape[0] not in (1, 3, 4):
        first = np.transpose(first, (2, 0, 1))
    np.testing.assert_allclose(data.x_train[0].reshape(first.shape), first, atol=1e-6)


def test_npz_x_y_stratified_split_and_folder(tmp_path):
    x, y = _xy(100, (8, 8))
    npz(tmp_path, x=x, y=y, num_classes=np.int64(6), class_names=np.array(list("abcdef")))
    a, b = load_dataset("npz", str(tmp_path)), load_dataset("npz", str(tmp_path))
    assert len(a.y_test) == 20 and np.array_equal(a.y_test, b.y_test)
    assert np.bincount(a.y_test).tolist() == [5, 5, 5, 5]
    assert a.num_classes == 6 and a.class_names == list("abcdef")


@pytest.mark.parametrize(
    "arrays,match",
    [
        (dict(x=np.full((4, 5, 5), np.nan), y=np.zeros(4, np.int64)), "NaN"),
        (dict(x=np.full((4, 5, 5), 2.0), y=np.zeros(4, np.int64)), r"in \[0, 1\]"),
        (dict(x=np.zeros((4, 5)), y=np.zeros(4, np.int64)), "N x C x H x W"),
        (dict(x=np.zeros((4, 5, 5)), y=np.zeros(3, np.int64)), "3 labels for 4"),
        (dict(x=np.zeros((4, 5, 5)), y=np.full(4, 0.5)), "integers"),
        (dict(x=np.zeros((4, 5, 5)), y=np.full(4, -1)), ">= 0"),
        (dict(x=np.zeros((4, 5, 5), np.int32), y=np.zeros(4, np.int64)), "uint8"),
        (dict(images=np.zeros((4, 5, 5))), "needs arrays"),
        (dict(x=np.zeros((20, 5, 5)), y=np.arange(20) % 4, num_classes=np.int64(2)), "num_cl"),
        (dict(x=np.zeros((4, 5, 5)), y=np.arange(4)), "non-empty"),
    ],
)
def test_npz_bad_arrays(tmp_path, arrays, match):
    with pytest.raises(DataError, match=match):
        load_dataset("npz", npz(tmp_path, **arrays))


def test_npz_bad_files(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("npz", str(tmp_path / "broken.npz"))
    np.savez(tmp_path / "second.npz", x=np.zeros((2, 4, 4)), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="2 .npz files"):
        load_dataset("npz", str(tmp_path))
    obj = tmp_path / "obj" / "o.npz"
    obj.parent.mkdir()
    np.savez(obj, x=np.array([object()] * 2), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="allow_pickle|pickle"):
        load_dataset("npz", str(obj))


# ---------------------------------------------------------------- digits and the CLI
def test_digits_split_is_stratified_and_fixed(digits):
    again = load_dataset("digits")
    assert np.array_equal(digits.y_test, again.y_test)
    assert np.array_equal(digits.x_train, again.x_train)
    n_tr, n_te = np.bincount(digits.y_train), np.bincount(digits.y_test)
    frac = n_te / (n_tr + n_te)
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert np.all(np.abs(frac - 0.25) < 0.01)


def test_registry_lists_all_sets():
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "npz", "synthetic"} <= set(
        DATASETS.names()
    )


def test_cli_missing_data_is_one_line(tmp_path, capsys, monkeypatch):
    from robustedge.cli import main

    monkeypatch.delenv("ROBUSTEDGE_DATA_DIR", raising=False)
    empty, out = tmp_path / "empty", tmp_path / "run"
    empty.mkdir()
    args = ["train", "--data", "mnist", "--model", "tiny", "--adversary", "none"]
    args += ["--epochs", "1", "--out", str(out)]
    for extra in (["--data-dir", str(empty)], []):
        with pytest.raises(SystemExit) as exc:
            main(args + extra)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert "mnist" in err and ("train-images" in err or "--data-dir" in err)
        assert not out.exists()
