"""Build a self-contained bundle from a run's export (host side; stdlib + numpy only).

Reads ``RUN/export/export.json`` (written by ``robustedge.export``), checks each chosen
artifact against its sha256, and writes model files (compressed with ``BundleConfig.codec``, xz
by default: the board stores the compressed file and inflates it before loading), evaluation
sets, the numpy-only Square core, the board code (``robustedge.device.board`` and the floor files
it imports, nothing from the host), ``run_bundle.py`` and ``manifest.json`` (sha256 of every
file) into a staging folder that is renamed into place (or packed into a .tar) only when
complete.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import platform
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import robustedge
from robustedge import jsonsafe
from robustedge.config import ConfigMixin, FieldError, setting
from robustedge.device.board.bundle_format import (
    CODECS,
    DEFAULT_CODEC,
    ENTRY,
    MANIFEST,
    SCHEMA,
    SQUARE,
    BundleError,
    compress_bytes,
    file_entry,
    load_square_core,
    swap_in_bundle,
)
from robustedge.errors import CheckpointError, RobustEdgeError, UnsafePathError
from robustedge.export.formats import board_order
from robustedge.hashing import sha256_file
from robustedge.io import safe_path

logger = logging.getLogger(__name__)

PKG = Path(robustedge.__file__).parent
SQUARE_SRC = PKG / "attacks" / SQUARE
BOARD_PKG = ("device", "board")  # the board code: shipped whole, and nothing else of device/
# the stdlib-only floor files the board code imports (import-linter keeps it to these)
LIB_FILES = ("errors.py", "registry.py", "hashing.py", "jsonsafe.py", "config.py", "codec.py")
NO_CODEC = "none"  # BundleConfig.codec: model files stored as exported
PathLike = Union[str, os.PathLike]


def codec_names() -> List[str]:
    """The values of ``BundleConfig.codec``: every codec, then ``none``."""
    return [*CODECS, NO_CODEC]


@dataclass(frozen=True)
class BundleConfig(ConfigMixin):
    """What ``robustedge bundle`` packs: which exported formats, and how models are stored."""

    formats: Tuple[str, ...] = setting(
        (),
        help="Exported format to pack, repeatable or a comma list; the first is the one the "
        "board runs by default (default: every exported format, best first).",
        metavar="FORMAT[,FORMAT]",
    )
    codec: str = setting(
        DEFAULT_CODEC,
        help="How model files are stored: compressed (the board inflates and checks them) or "
        f"{NO_CODEC} (as exported).",
        choices=codec_names,
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(self.formats))
        if self.codec not in codec_names():
            raise FieldError(
                "codec", f"unknown codec '{self.codec}' (known: {', '.join(codec_names())})"
            )
        if any(not isinstance(f, str) or not f for f in self.formats):
            raise FieldError("formats", f"formats must be format names, got {self.formats!r}")
        if len(set(self.formats)) != len(self.formats):
            raise FieldError("formats", f"a format is named twice: {', '.join(self.formats)}")

    @property
    def compression(self) -> Optional[str]:
        """The codec models are compressed with; None: stored as exported."""
        return None if self.codec == NO_CODEC else self.codec


def read_export(run: PathLike) -> Dict[str, Any]:
    """``RUN/export/export.json`` as a dict; CheckpointError when missing or corrupt."""
    path = Path(run) / "export" / "export.json"
    try:
        export = jsonsafe.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(f"{path} not found: run `robustedge export {run}` first") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"corrupt {path}: {e}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(export, dict):
        raise CheckpointError(f"corrupt {path}: not a JSON object")
    for key in ("artifacts", "eval_sets", "eval_sha256", "transfer_attack"):
        if export.get(key) is not None and not isinstance(export[key], dict):
            raise CheckpointError(f"corrupt {path}: '{key}' is not a mapping")
    return export


def choose_formats(export: Dict[str, Any], formats: Optional[Sequence[str]]) -> List[str]:
    have = export.get("artifacts") or {}
    if not have:
        raise CheckpointError("export.json lists no artifacts")
    wanted = list(formats) if formats else sorted(have, key=_format_rank)
    missing = [f for f in wanted if f not in have]
    if missing:
        raise RobustEdgeError(
            f"format(s) {', '.join(missing)} not exported for this run "
            f"(exported: {', '.join(sorted(have))})"
        )
    return wanted


def _format_rank(fmt: str) -> int:
    """A board's preference for ``fmt`` (the export format registry's order; unknown last)."""
    order = board_order()
    return order.index(fmt) if fmt in order else len(order)


def build_bundle(
    run: PathLike, out: PathLike, cfg: Union[BundleConfig, Sequence[str], None] = None
) -> Path:
    """Write the bundle for ``run`` to ``out`` (a folder, or a file ending in .tar); return it.

    ``cfg``: a :class:`BundleConfig`, or just the formats (the other settings at their
    defaults), or None (all defaults).
    """
    if not isinstance(cfg, BundleConfig):
        cfg = BundleConfig(formats=tuple(cfg or ()))
    codec = cfg.compression
    run, out = Path(run), Path(out)
    export = read_export(run)
    chosen = choose_formats(export, cfg.formats)
    if not SQUARE_SRC.is_file():
        raise RobustEdgeError(f"{SQUARE_SRC} is missing: the bundle needs the Square core")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _fill(stage, run / "export", export, chosen, codec)
        if out.suffix == ".tar":
            _pack(stage, out)
        else:
            swap_in_bundle(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    logger.info("bundle written: %s", out)
    return out


def _fill(
    stage: Path, export_dir: Path, export: Dict[str, Any], chosen: List[str], codec: Optional[str]
) -> None:
    # Every file named by export.json must lie inside the export folder and match the sha256
    # recorded there (safe_path/verified_file): a hostile export.json cannot pull in other files.
    formats: Dict[str, Any] = {}
    for fmt in chosen:
        if not isinstance(export["artifacts"][fmt], dict):
            raise CheckpointError(f"export.json: artifact '{fmt}' is not a mapping")
        art = dict(export["artifacts"][fmt])
        src = verified_file(export_dir, art.get("file"), art.get("sha256"), f"artifact {fmt}")
        rel = f"models/{src.name}"
        if codec is None:
            _copy(src, stage / rel)
        else:
            art.update(_compressed(src, stage, rel, codec))
            rel = art["file"]
        art["file"] = rel
        formats[fmt] = art
    eval_sets = {}
    hashes = export.get("eval_sha256") or {}
    for name, fname in (export.get("eval_sets") or {}).items():
        what = f"eval set '{name}'"
        if not (isinstance(name, str) and name.isidentifier()):
            raise CheckpointError(f"export.json: bad eval set name {name!r}")
        src = verified_file(export_dir, fname, hashes.get(name), what)
        eval_sets[name] = f"data/{src.name}"
        _copy(src, stage / eval_sets[name])
    if "clean" not in eval_sets:
        raise CheckpointError("export.json has no 'clean' eval set")
    _copy(SQUARE_SRC, stage / SQUARE)
    _copy(PKG.joinpath(*BOARD_PKG, "entry.py"), stage / ENTRY)
    _board_code(stage / "lib" / "robustedge")
    files = {
        p.relative_to(stage).as_posix(): file_entry(p)
        for p in sorted(stage.rglob("*"))
        if p.is_file()
    }
    transfer = export.get("transfer_attack") or {}
    manifest = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": export.get("run"),
        "data": export.get("data"),
        "num_classes": export.get("num_classes"),
        "input_shape_nchw": export.get("input_shape_nchw"),
        "default_format": chosen[0],
        "formats": formats,
        "eval_sets": eval_sets,
        "square": {
            "file": SQUARE,
            "eps": _square_eps(transfer, export.get("square_eps")),
            "p_init": square_p_init(),
        },
        "transfer_attack": transfer,
        "versions": host_versions(),
        "files": files,
    }
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _board_code(lib: Path) -> None:
    """The runner's package under ``lib``: the floor files and ``device/board`` (no host code;
    the package ``__init__`` files are written here, so nothing else of ``device/`` ships)."""
    lib.joinpath(*BOARD_PKG).mkdir(parents=True)
    (lib / "__init__.py").write_text(
        f'"""robustedge runner (bundled)."""\n\n__version__ = "{robustedge.__version__}"\n'
    )
    (lib / "device" / "__init__.py").write_text('"""robustedge board code (bundled)."""\n')
    for name in LIB_FILES:
        _copy(PKG / name, lib / name)
    for src in sorted(PKG.joinpath(*BOARD_PKG).glob("*.py")):
        _copy(src, lib.joinpath(*BOARD_PKG, src.name))


def square_p_init() -> float:
    """Square's initial fraction of pixels changed: the bundled core's own ``P_INIT`` (read
    from the file by path: importing ``robustedge.attacks`` would import torch)."""
    return float(load_square_core(SQUARE_SRC).P_INIT)


def _compressed(src: Path, stage: Path, rel: str, codec: str) -> Dict[str, Any]:
    """Write ``src`` compressed to ``stage/rel + suffix``; the format entry's new fields."""
    raw = src.read_bytes()
    packed = compress_bytes(raw, codec)
    dst = stage / (rel + CODECS[codec])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(packed)
    return {
        "file": rel + CODECS[codec],
        "codec": codec,
        "model_file": src.name,
        "model_bytes": len(raw),
        "model_sha256": hashlib.sha256(raw).hexdigest(),
        "flash_bytes": len(packed),
    }


def host_versions() -> Dict[str, str]:
    import numpy as np

    from robustedge.device.board.backends import versions

    return {
        "robustedge": robustedge.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        **versions(),
    }


def verified_file(root: Path, rel: Any, sha256: Any, what: str) -> Path:
    """``root / rel`` when it stays inside ``root`` (:func:`robustedge.io.safe_path`), exists
    and matches the recorded sha256; a missing record is refused too."""
    path = safe_path(root, rel, what)
    if not path.is_file():
        raise CheckpointError(f"{what} missing: {path}")
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise UnsafePathError(f"{what}: export.json records no sha256 for {path}: refused")
    if sha256_file(path) != sha256.lower():
        raise UnsafePathError(f"{what}: {path} does not match its recorded sha256: refused")
    return path


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _pack(stage: Path, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w") as tar:
        tar.add(stage, arcname=out.stem)
    os.replace(tmp, out)


def unpack(tar_path: PathLike, dest: PathLike) -> Path:
    """Extract a bundle .tar into ``dest`` (refusing paths outside it); return the bundle dir."""
    dest = Path(dest)
    try:
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
            for m in members:
                if (
                    m.name.startswith("/")
                    or ".." in Path(m.name).parts
                    or not (m.isfile() or m.isdir())
                ):
                    raise BundleError(f"{tar_path}: unsafe member {m.name!r}")
            tops = {Path(m.name).parts[0] for m in members if Path(m.name).parts}
            if len(tops) != 1 or tops == {"."}:
                raise BundleError(f"{tar_path} is not a bundle archive (one top folder expected)")
            for m in members:  # plain files and folders only; no set-uid bits from the archive
                m.mode &= 0o755
            tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{tar_path} is not a readable bundle archive ({reason})") from None
    return dest / tops.pop()


def _square_eps(transfer: Dict[str, Any], given: Any = None) -> float:
    """The board's Square budget: ``given`` (export.json's ``square_eps``, a bare model file's
    bundle), else the transfer attack's eps, else the evaluation default."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, (int, float)) or given < 0:
            raise CheckpointError(f"export.json: square_eps is not a budget: {given!r}")
        return float(given)
    if "eps" in transfer:
        return float(transfer["eps"])
    from robustedge.attacks.base import DEFAULT_EPS  # torch: host side only, and only here

    return DEFAULT_EPS
