"""Opt-in downloads of MNIST, Fashion-MNIST and CIFAR-10, each archive's sha256 checked.

Nothing downloads unless asked (``robustedge train --download``, ``api.train(download=True)``
or :func:`download`). Each archive is streamed to a temporary file beside its place in the
cache folder, hashed on the way, and renamed into place only when its sha256 is the published
one: a wrong or truncated file never lands. An archive already in the cache with the right
sha256 is not fetched again. The files keep the standard layout that the loaders read
(``<cache>/mnist/*.gz``, ``<cache>/fashion-mnist/*.gz``, ``<cache>/cifar10/cifar-10-python.
tar.gz``; CIFAR's pickled batches are read by the restricted unpickler of
:mod:`robustedge.data.cifar`, which rebuilds only numpy arrays).

The downloadable sets are entries of the ``DOWNLOADS`` registry (name = the ``DATASETS``
name they fill).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from robustedge.data.files import DATA_DIR_ENV
from robustedge.errors import DataError
from robustedge.registry import Registry

logger = logging.getLogger(__name__)

__all__ = ["DOWNLOADS", "Archive", "Source", "default_cache", "download"]

CHUNK = 1 << 20
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Archive:
    """One file to fetch: its name on the mirror and in the cache, its sha256 and size."""

    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Source:
    """A downloadable data set: the cache sub-folder its loader reads, mirrors tried in order
    (base URLs ending in ``/``), and its archives."""

    folder: str
    mirrors: Tuple[str, ...]
    archives: Tuple[Archive, ...]


DOWNLOADS: Registry = Registry("downloadable data set")

DOWNLOADS.register(
    "mnist",
    Source(
        "mnist",
        (
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
        (
            Archive(
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                9912422,
            ),
            Archive(
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                28881,
            ),
            Archive(
                "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                1648877,
            ),
            Archive(
                "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                4542,
            ),
        ),
    ),
)
DOWNLOADS.register(
    "fashion-mnist",
    Source(
        "fashion-mnist",
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        (
            Archive(
                "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                26421880,
            ),
            Archive(
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                29515,
            ),
            Archive(
                "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                4422102,
            ),
            Archive(
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                5148,
            ),
        ),
    ),
)
DOWNLOADS.register(
    "cifar10",
    Source(
        "cifar10",
        ("https://www.cs.toronto.edu/~kriz/",),
        (
            Archive(
                "cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                170498071,
            ),
        ),
    ),
)


def default_cache() -> Path:
    """$ROBUSTEDGE_DATA_DIR, else ~/.cache/robustedge/data."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path.home() / ".cache" / "robustedge" / "data"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, archive: Archive) -> None:
    """Stream ``url`` into ``dest`` only if its bytes hash to ``archive.sha256``."""
    if not url.startswith(("http://", "https://")):
        raise DataError(f"refused mirror {url!r}: only http(s) URLs are fetched")
    h, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            for block in iter(lambda: r.read(CHUNK), b""):
                size += len(block)
                if size > archive.size:
                    raise DataError(f"{url}: more than the expected {archive.size:,} bytes")
                h.update(block)
                out.write(block)
        if h.hexdigest() != archive.sha256:
            raise DataError(
                f"{url}: sha256 {h.hexdigest()} ({size:,} bytes) is not the published "
                f"{archive.sha256}: refused"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download(
    name: str, cache_dir: Optional[os.PathLike] = None, mirrors: Optional[Sequence[str]] = None
) -> Path:
    """Fetch the archives of data set ``name`` (a ``DOWNLOADS`` name) into ``cache_dir``
    (default :func:`default_cache`) unless they are there with the right sha256; returns the
    cache folder, which ``load_dataset(name, data_dir=...)`` reads. ``mirrors``: base URLs to
    try in place of the registered ones. Every failure is one DataError naming each mirror."""
    source: Source = DOWNLOADS.get(name)
    root = Path(cache_dir) if cache_dir is not None else default_cache()
    folder = root / source.folder
    folder.mkdir(parents=True, exist_ok=True)
    for archive in source.archives:
        dest = folder / archive.file
        if dest.is_file() and sha256_of(dest) == archive.sha256:
            continue
        errors: List[str] = []
        for base in mirrors or source.mirrors:
            url = base.rstrip("/") + "/" + archive.file
            try:
                logger.info("downloading %s", url)
                _fetch(url, dest, archive)
                break
            except DataError as e:
                errors.append(str(e))
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
        else:
            raise DataError(f"{name}: cannot download {archive.file}: " + "; ".join(errors))
    return root
