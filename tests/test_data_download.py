"""Downloads: archives with the real file layout served from a local HTTP server on
127.0.0.1 (nothing leaves the machine); sha256 checked before a file lands in the cache."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading

import numpy as np
import pytest

from robustedge.data import DOWNLOADS, download, load_dataset
from robustedge.data.download import Archive, Source
from robustedge.errors import DataError

IDX = {
    "train-images-idx3-ubyte.gz": (12, 28, 28),
    "train-labels-idx1-ubyte.gz": (12,),
    "t10k-images-idx3-ubyte.gz": (6, 28, 28),
    "t10k-labels-idx1-ubyte.gz": (6,),
}


def idx_gz(shape) -> bytes:
    """An IDX file (ubyte) of ``shape``, gzipped: labels 0..9 cycling, images seeded."""
    arr = (
        np.arange(shape[0]) % 10
        if len(shape) == 1
        else np.random.default_rng(shape[0]).integers(0, 256, shape)
    ).astype(np.uint8)
    head = struct.pack(">HBB", 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    return gzip.compress(head + arr.tobytes(), mtime=0)


def cifar_tar() -> bytes:
    """cifar-10-python.tar.gz with cifar-10-batches-py/ holding 2 images per batch."""
    rng = np.random.default_rng(0)
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        members[name] = pickle.dumps(
            {b"labels": [1, 7], b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8)},
            protocol=2,
        )
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    members["batches.meta"] = pickle.dumps({b"label_names": names}, protocol=2)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Server:
    """An HTTP server on 127.0.0.1 serving ``files`` (path -> bytes), counting requests."""

    def __init__(self, files) -> None:
        self.files, self.requests = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    files = {f"/mnist/{n}": idx_gz(shape) for n, shape in IDX.items()}
    files["/cifar/cifar-10-python.tar.gz"] = cifar_tar()
    s = Server(files)
    yield s
    s.close()


@pytest.fixture
def toy_sources(server):
    """Toy DOWNLOADS entries for the served archives (their own sha256), filling the
    loaders' folders; removed afterwards."""

    def archives(prefix):
        return tuple(
            Archive(p.rsplit("/", 1)[1], hashlib.sha256(b).hexdigest(), len(b))
            for p, b in server.files.items()
            if p.startswith(prefix)
        )

    DOWNLOADS.register(
        "toy-mnist",
        Source("mnist", ("http://127.0.0.1:9/", server.url + "/mnist/"), archives("/mnist/")),
    )
    DOWNLOADS.register(
        "toy-cifar", Source("cifar10", (server.url + "/cifar/",), archives("/cifar/"))
    )
    yield
    DOWNLOADS.unregister("toy-mnist")
    DOWNLOADS.unregister("toy-cifar")


def test_mnist_layout_downloads_verifies_and_loads(tmp_path, server, toy_sources):
    cache = download("toy-mnist", tmp_path)  # first mirror (port 9) refuses: next one serves
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(IDX)
    data = load_dataset("mnist", str(cache))
    assert data.x_train.shape == (12, 1, 28, 28) and list(data.y_test) == [0, 1, 2, 3, 4, 5]
    raw = gzip.decompress(server.files["/mnist/train-images-idx3-ubyte.gz"])[16:]
    assert data.x_train[0, 0, 0, 0] == np.float32(raw[0]) / np.float32(255)
    served = len(server.requests)
    download("toy-mnist", tmp_path)  # all four in the cache with the right sha256: no request
    assert len(server.requests) == served == 4


def test_a_corrupt_cached_file_is_fetched_again(tmp_path, server, toy_sources):
    download("toy-mnist", tmp_path)
    bad = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"garbage")
    download("toy-mnist", tmp_path)
    assert bad.read_bytes() == server.files["/mnist/t10k-labels-idx1-ubyte.gz"]
    assert server.requests[-1] == "/mnist/t10k-labels-idx1-ubyte.gz" and len(server.requests) == 5


def test_cifar_tarball_downloads_and_loads_without_unpickling_code(tmp_path, toy_sources):
    cache = download("toy-cifar", tmp_path)
    data = load_dataset("cifar10", str(cache))
    assert data.x_train.shape == (10, 3, 32, 32) and list(data.y_test) == [1, 7]
    assert data.class_names[9] == "truck"


def test_files_that_are_not_the_published_ones_never_land(tmp_path, server):
    # the real MNIST entry (published sha256s) pointed at the generated files: all refused
    with pytest.raises(
        DataError, match=r"mnist: cannot download train-images.*is not the published 440fcabf"
    ):
        download("mnist", tmp_path, mirrors=[server.url + "/mnist/"])
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # no file, not even a temp one


def test_an_oversized_or_missing_file_is_refused(tmp_path, server):
    big = server.files["/mnist/t10k-labels-idx1-ubyte.gz"]
    DOWNLOADS.register(
        "toy-small",
        Source(
            "toy",
            (server.url + "/mnist/",),
            (Archive("t10k-labels-idx1-ubyte.gz", "0" * 64, len(big) - 1),),
        ),
    )
    DOWNLOADS.register(
        "toy-gone", Source("toy", (server.url + "/none/",), (Archive("x.gz", "0" * 64, 10),))
    )
    try:
        with pytest.raises(DataError, match="more than the expected"):
            download("toy-small", tmp_path)
        with pytest.raises(DataError, match="cannot download x.gz: .*Not Found"):
            download("toy-gone", tmp_path)
        with pytest.raises(DataError, match="only http"):
            download("toy-gone", tmp_path, mirrors=["file:///etc/"])
    finally:
        DOWNLOADS.unregister("toy-small")
        DOWNLOADS.unregister("toy-gone")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_train_download_flag_fetches_into_data_dir_and_records_it(tmp_path, server, toy_sources):
    from robustedge.cli import main
    from robustedge.runs import read_config

    real = DOWNLOADS.unregister("mnist")  # the real entry would reach the internet
    DOWNLOADS.register("mnist", DOWNLOADS.get("toy-mnist"))
    try:
        main(
            [
                "train",
                "--data",
                "mnist",
                "--download",
                "--data-dir",
                str(tmp_path / "cache"),
                "--model",
                "tiny",
                "--epochs",
                "1",
                "--adversary",
                "none",
                "--no-progress",
                "--out",
                str(tmp_path / "run"),
            ]
        )
    except SystemExit as e:
        assert e.code in (0, None)
    finally:
        DOWNLOADS.unregister("mnist")
        DOWNLOADS.register("mnist", real)
    assert read_config(tmp_path / "run")["data_dir"] == str(tmp_path / "cache")
    assert (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_every_registered_download_fills_a_registered_data_set():
    from robustedge.data import DATASETS

    for name, source in DOWNLOADS.items():
        assert name in DATASETS and source.mirrors and source.archives
        assert all(len(a.sha256) == 64 and a.size > 0 for a in source.archives)
