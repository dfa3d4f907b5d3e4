"""Helpers shared by the file-based loaders: the data folder, finding files, reading bytes."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path
from typing import Optional, Sequence

from robustedge.errors import DataError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "ROBUSTEDGE_DATA_DIR"
GZIP_MAGIC = b"\x1f\x8b"


def require_data_dir(data_dir: Optional[object], dataset: str) -> Path:
    """The data folder (or file) as a Path; DataError naming --data-dir and the env var if unset."""
    if data_dir is None or str(data_dir) == "":
        raise DataError(
            f"{dataset}: no data location given; pass --data-dir DIR or set ${DATA_DIR_ENV}"
        )
    path = Path(str(data_dir)).expanduser()
    if not path.exists():
        raise DataError(f"{dataset}: data location {path} does not exist")
    return path


def candidate_dirs(root: Path, subfolders: Sequence[str]) -> list:
    """Existing folders to search, most specific first: ``root/<sub>`` for each sub, then root."""
    dirs = [root / s for s in subfolders if (root / s).is_dir()]
    return dirs + [root] if root.is_dir() else dirs


def find_first(dirs: Sequence[Path], names: Sequence[str]) -> Optional[Path]:
    """The first ``dir/name`` that is a file, trying every name in each folder in order."""
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def read_maybe_gzip(path: Path) -> bytes:
    """All bytes of ``path``, gunzipped when it starts with the gzip magic; DataError if corrupt."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if raw[:2] != GZIP_MAGIC:
        if path.suffix == ".gz":
            raise DataError(f"{path}: not a gzip file (bad magic bytes)")
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
