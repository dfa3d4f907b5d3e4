"""The bundle format shared by the host (builder) and the board (runner). stdlib only.

A bundle is one folder (or a .tar of it)::

    run_bundle.py          entry script: python3 run_bundle.py --out results.json
    manifest.json          sha256 + size of every other file, input layout, quant params,
                           the host's parity metrics, versions
    square_core.py         numpy-only Square attack, loaded by file path
    models/<file>[.xz]     .tflite / .onnx artifacts, compressed by default (``codec`` in the
                           format's entry: ``xz`` or ``gzip``, standard library on the board)
    data/<set>.npz         evaluation sets: x N x C x H x W float32 in [0, 1], y int64
    lib/robustedge/...     the runner code: robustedge.device.board and the stdlib-only floor
                           files it imports (errors, registry, hashing, jsonsafe, config)

``verify_bundle`` checks every listed file against its sha256 before anything runs, and every
compressed model twice: its stored bytes (``files``) and the bytes it decompresses to
(``model_sha256`` / ``model_bytes`` in the format's entry), so a compressed file that inflates to
other bytes is refused even when its own entry was rewritten to match.

Sizes: *flash bytes* are what the board stores (the compressed file), *model bytes* what the
interpreter loads (the decompressed file).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Union

from robustedge import jsonsafe
from robustedge.codec import CODECS, DEFAULT_CODEC, compress_bytes  # noqa: F401 (re-exported)
from robustedge.errors import RobustEdgeError
from robustedge.hashing import sha256_file

MANIFEST = "manifest.json"
SCHEMA = "robustedge.bundle/1"
ENTRY = "run_bundle.py"
SQUARE = "square_core.py"
# Files Python could import or execute: all of them must be listed (and so checked).
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".pth")
# Model compression: codec -> file suffix. xz is the default because it was the smaller on
# every int8 .tflite measured, dense and sparse-encoded (1.5-12 % below gzip -9;
# benchmarks/bundle_compression.py, benchmarks/measured/bundle_compression.json); gzip inflates
# faster and stays available (``robustedge bundle --codec gzip``).
CHUNK = 1 << 16
MAX_MODEL_BYTES = 1 << 30  # a compressed model may not claim to inflate to more than 1 GiB


class BundleError(RobustEdgeError):
    """A tampered, incomplete or mismatched bundle: the runner refuses it."""


class CorruptStream(Exception):
    """A compressed model that does not decompress cleanly (becomes a BundleError)."""


def read_manifest(bundle: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The bundle's manifest.json (schema checked); BundleError if absent or corrupt."""
    root = Path(bundle)
    path = root / MANIFEST
    if root.exists() and not root.is_dir():
        raise BundleError(f"not a bundle: {root} is a file (a bundle is a folder or a .tar)")
    try:
        manifest = jsonsafe.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise BundleError(f"not a bundle: {path} is missing") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError(f"corrupt bundle manifest {path}: {e}") from None
    except OSError as e:
        raise BundleError(f"cannot read bundle manifest {path}: {e.strerror or e}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise BundleError(f"{path} is not a {SCHEMA} manifest")
    return manifest


def inside(root: Path, rel: Any) -> Path:
    """``root / rel`` for a path named by the manifest; BundleError unless it is a relative path
    that stays inside the bundle (no absolute path, ``..``, NUL, or symlink leading out)."""
    if not isinstance(rel, str) or not rel or "\\" in rel or any(ord(c) < 32 for c in rel):
        raise BundleError(f"bundle manifest names a bad path: {rel!r}")
    if rel.startswith("/") or ".." in rel.split("/"):
        raise BundleError(f"bundle manifest names a path outside the bundle: {rel}")
    path = root / rel
    try:
        ok = str(path.resolve()).startswith(str(root.resolve()) + os.sep)
    except (OSError, RuntimeError):
        ok = False
    if not ok:
        raise BundleError(f"bundle manifest names a path outside the bundle: {rel}")
    return path


def verify_bundle(bundle: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Check every file the manifest lists (inside, present, size, sha256); return the manifest.

    Every file the runner will open (model files, eval sets, the Square core) must be one of
    the listed files. Raises ``BundleError`` naming the first bad file: a tampered or
    incomplete bundle never runs.
    """
    root = Path(bundle)
    manifest = read_manifest(root)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"bundle manifest in {root} lists no files")
    for rel, meta in sorted(files.items()):
        path = inside(root, rel)
        if not isinstance(meta, dict):
            raise BundleError(f"bundle manifest: entry for {rel} is not a mapping")
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"incomplete bundle: {rel} is missing (or not a plain file)")
        if path.stat().st_size != meta.get("bytes"):
            raise BundleError(
                f"tampered bundle: {rel} has {path.stat().st_size} bytes, "
                f"manifest says {meta.get('bytes')}"
            )
        if sha256_file(path) != meta.get("sha256"):
            raise BundleError(f"tampered bundle: sha256 of {rel} does not match the manifest")
    for rel in referenced_files(manifest) + [SQUARE, ENTRY]:
        if not isinstance(rel, str) or rel not in files:
            raise BundleError(f"bundle manifest names {rel!r}, which it does not list and check")
    for _fmt, art in sorted(manifest["formats"].items()):
        if art.get("codec") is not None:
            inflate_model(inside(root, art["file"]), art)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise BundleError(f"bundle holds a symbolic link: {rel}")
        if path.suffix in CODE_SUFFIXES and rel not in files:
            raise BundleError(f"bundle holds code the manifest does not list: {rel}")
    return manifest


def referenced_files(manifest: Dict[str, Any]) -> List[Any]:
    """Every path the runner opens: formats[*].file, eval_sets[*], square.file."""
    formats, sets = manifest.get("formats"), manifest.get("eval_sets")
    square = manifest.get("square")
    if not isinstance(formats, dict) or not formats or not isinstance(sets, dict):
        raise BundleError("bundle manifest: 'formats' and 'eval_sets' must be mappings")
    if any(not isinstance(a, dict) for a in formats.values()):
        raise BundleError("bundle manifest: every format must be a mapping")
    refs = [a.get("file") for a in formats.values()] + list(sets.values())
    if square is not None:
        if not isinstance(square, dict):
            raise BundleError("bundle manifest: 'square' must be a mapping")
        refs.append(square.get("file", SQUARE))
    return refs


def load_square_core(path: Union[str, os.PathLike]) -> Any:
    """The numpy-only Square core at ``path``, imported by file path (on the board it is not
    a package; the host reads its ``P_INIT`` the same way, without importing torch)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("robustedge_square_core", path)
    if spec is None or spec.loader is None:
        raise BundleError(f"cannot load the Square core {Path(path).name}")
    mod = importlib.util.module_from_spec(spec)
    cache, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:  # never a __pycache__ beside a bundle's checked files (it would fail verification)
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = cache
    return mod


def model_name(art: Dict[str, Any]) -> str:
    """File name of the model the interpreter loads (the decompressed one when compressed)."""
    name = art.get("model_file") if art.get("codec") is not None else None
    name = name or str(art.get("file", ""))
    return name.rsplit("/", 1)[-1]


def inflate_model(
    path: Path, art: Dict[str, Any], out: Optional[IO[bytes]] = None
) -> Dict[str, Any]:
    """Decompress the model at ``path`` (streamed, never past ``model_bytes``), check its length
    and sha256 against the format entry, optionally writing it to ``out``; BundleError (one line)
    when it does not inflate to exactly the recorded bytes. Returns ``{"bytes", "sha256"}``."""
    codec, want_sha, want_n = art.get("codec"), art.get("model_sha256"), art.get("model_bytes")
    rel = art.get("file")
    if codec not in CODECS:
        raise BundleError(f"bundle manifest: {rel} has unknown codec {codec!r}")
    if not (isinstance(want_sha, str) and len(want_sha) == 64) or type(want_n) is not int:
        raise BundleError(f"bundle manifest: {rel} records no model_sha256/model_bytes")
    if not 0 < want_n <= MAX_MODEL_BYTES:
        raise BundleError(
            f"bundle manifest: {rel} claims to inflate to {want_n} bytes "
            f"(allowed: 1 to {MAX_MODEL_BYTES})"
        )
    h, n = hashlib.sha256(), 0
    try:
        with open(path, "rb") as f:
            for block in _inflate(f, codec):
                n += len(block)
                if n > want_n:
                    raise BundleError(
                        f"tampered bundle: {rel} decompresses to more than the "
                        f"{want_n} bytes the manifest records"
                    )
                h.update(block)
                if out is not None:
                    out.write(block)
    except (OSError, EOFError, zlib.error, CorruptStream) as e:
        raise BundleError(
            f"tampered bundle: {rel} does not decompress ({_first_line(e)})"
        ) from None
    if n != want_n:
        raise BundleError(
            f"tampered bundle: {rel} decompresses to {n} bytes, manifest says {want_n}"
        )
    if h.hexdigest() != want_sha:
        raise BundleError(
            f"tampered bundle: sha256 of {rel} decompressed does not match the manifest"
        )
    return {"bytes": n, "sha256": want_sha}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _inflate(f: IO[bytes], codec: str) -> Iterator[bytes]:
    """Decompressed blocks of at most CHUNK bytes; CorruptStream on a corrupt, truncated or
    over-long stream."""
    if codec == "xz":
        try:
            import lzma
        except ImportError:
            raise BundleError(
                "this Python has no lzma module: rebuild the bundle with --codec gzip "
                "or install a Python built with liblzma"
            ) from None
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        while not d.eof:
            chunk = f.read(CHUNK) if d.needs_input else b""
            if d.needs_input and not chunk:
                raise CorruptStream("truncated xz stream")
            try:
                block = d.decompress(chunk, max_length=CHUNK)
            except lzma.LZMAError as e:
                raise CorruptStream(str(e)) from None
            yield block
        leftover: Callable[[], bytes] = lambda: d.unused_data  # noqa: E731
    else:
        z = zlib.decompressobj(wbits=31)  # gzip header and trailer (CRC-32, length)
        buf = b""
        while not z.eof:
            buf = buf or f.read(CHUNK)
            if not buf:
                raise CorruptStream("truncated gzip stream")
            yield z.decompress(buf, CHUNK)
            buf = z.unconsumed_tail
        leftover = lambda: z.unused_data + buf  # noqa: E731
    if leftover() or f.read(1):
        raise CorruptStream("data after the end of the compressed stream")


def file_entry(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


def swap_in_bundle(stage: Path, out: Path) -> None:
    """Rename the finished folder ``stage`` onto ``out``; an old bundle is replaced only at the
    end, and a folder that is not a bundle is never overwritten."""
    old = out.with_name(f".{out.name}.old")
    if old.is_dir() and not out.exists() and (old / MANIFEST).is_file():
        os.replace(old, out)  # a swap cut short by a crash: the finished bundle comes back
    if out.exists() and not (out / MANIFEST).is_file():
        raise RobustEdgeError(f"{out} exists and is not a bundle: not overwriting it")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)
