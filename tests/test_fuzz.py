"""Property-based fuzzing of the file parsers (issue 15).

Any bytes given to the IDX, CIFAR-batch, npz, bundle-manifest and recipe parsers give either a
valid result or the project's own one-line error (a ``RobustEdgeError`` subclass), never another
exception. Each property runs ``ROBUSTEDGE_FUZZ_EXAMPLES`` examples (default 40, bounded for
``make test``); a longer run::

    ROBUSTEDGE_FUZZ_EXAMPLES=3000 OMP_NUM_THREADS=1 .venv/bin/python -m pytest -m fuzz \
        tests/test_fuzz.py

Inputs are random bytes and, more usefully, valid files with a few bytes flipped, cut or
inserted, and structured values (pickled dicts, arrays, JSON and YAML trees).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustedge.errors import RobustEdgeError

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("ROBUSTEDGE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 100,  # make test: the same examples every run
    database=None,  # nothing written into the repository
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def one_line(e: BaseException) -> None:
    assert isinstance(e, RobustEdgeError), f"{type(e).__name__}: {e}"
    assert "\n" not in str(e).strip(), str(e)


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` with a few byte flips, a cut and an insertion."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()) and data:
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] if draw(st.booleans()) else data[cut:]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=16))
    return bytes(data)


def any_bytes(seeds):
    return st.one_of(st.binary(max_size=512), *[mutated(s) for s in seeds])


# ---------------------------------------------------------------- IDX


def idx(arr: np.ndarray, code: int) -> bytes:
    head = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


IDX_SEEDS = [
    idx(np.arange(2 * 28 * 28, dtype=">u1").reshape(2, 28, 28), 0x08),
    idx(np.arange(5, dtype=">u1"), 0x08),
    idx(np.ones((3, 4), dtype=">f4"), 0x0D),
]


@FUZZ
@given(data=any_bytes(IDX_SEEDS))
def test_fuzz_idx(data):
    from robustedge.data.idx import parse_idx

    try:
        arr = parse_idx(data, "fuzz")
    except RobustEdgeError as e:
        one_line(e)
        return
    assert isinstance(arr, np.ndarray) and arr.ndim >= 1


@FUZZ
@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0x10]),
    extra=st.integers(-3, 3),
)
def test_fuzz_idx_headers(shape, code, extra):
    from robustedge.data.idx import IDX_DTYPES, parse_idx

    size = int(np.prod(shape)) * (np.dtype(IDX_DTYPES.get(code, ">u1")).itemsize)
    data = struct.pack(">HBB", 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    payload = max(0, size + extra)
    data += b"\x01" * payload
    try:
        arr = parse_idx(data, "fuzz")
    except RobustEdgeError as e:
        one_line(e)
        return
    assert list(arr.shape) == shape and payload == size and code in IDX_DTYPES


# ---------------------------------------------------------------- CIFAR batches


def batch(n: int = 2) -> bytes:
    d = {b"data": np.zeros((n, 3072), np.uint8), b"labels": list(range(n))}
    return pickle.dumps(d, protocol=2)


CIFAR_SEEDS = [batch(2), batch(1), pickle.dumps({"data": 1, "labels": [1]})]

pickled_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@FUZZ
@given(data=st.one_of(any_bytes(CIFAR_SEEDS), pickled_values.map(pickle.dumps)))
def test_fuzz_cifar_batch(data):
    from robustedge.data.cifar import parse_batch

    try:
        x, y = parse_batch(data, "fuzz")
    except RobustEdgeError as e:
        one_line(e)
        return
    assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and len(y) == len(x)


@FUZZ
@given(
    n=st.integers(0, 3),
    width=st.sampled_from([3072, 3071, 0]),
    dtype=st.sampled_from(["u1", "i8", "f4"]),
    labels=st.lists(st.integers(-(2**70), 2**70), max_size=4),
)
def test_fuzz_cifar_structured(n, width, dtype, labels):
    from robustedge.data.cifar import parse_batch

    data = pickle.dumps({b"data": np.zeros((n, width), dtype), b"labels": labels}, protocol=2)
    try:
        x, y = parse_batch(data, "fuzz")
    except RobustEdgeError as e:
        one_line(e)
        return
    assert len(x) == len(y) == n


# ---------------------------------------------------------------- npz


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


NPZ_SEEDS = [
    npz_bytes(x=np.zeros((20, 4, 4), np.uint8), y=np.arange(20) % 2),
    npz_bytes(
        x_train=np.zeros((6, 1, 4, 4), np.float32),
        y_train=np.arange(6) % 3,
        x_test=np.zeros((3, 1, 4, 4), np.float32),
        y_test=np.arange(3),
        num_classes=np.int64(3),
    ),
]

npz_arrays = st.dictionaries(
    st.sampled_from(["x", "y", "x_train", "y_train", "x_test", "y_test", "num_classes"]),
    st.tuples(
        st.lists(st.integers(0, 5), max_size=4),
        st.sampled_from(["u1", "i8", "f4", "f8", "b1", "U3"]),
        st.integers(-3, 300),
    ).map(lambda t: np.full(t[0], t[2]).astype(t[1])),
    max_size=7,
)


def load_npz_bytes(data: bytes):
    from robustedge.data.npz import load_npz

    folder = Path(tempfile.mkdtemp(prefix="fuzz-npz-"))
    try:
        (folder / "f.npz").write_bytes(data)
        return load_npz(folder / "f.npz")
    finally:
        shutil.rmtree(folder)


@FUZZ
@given(data=st.one_of(any_bytes(NPZ_SEEDS), npz_arrays.map(lambda a: npz_bytes(**a))))
def test_fuzz_npz(data):
    try:
        ds = load_npz_bytes(data)
    except RobustEdgeError as e:
        one_line(e)
        return
    assert ds.x_train.dtype == np.float32 and ds.num_classes >= 2


# ---------------------------------------------------------------- bundle manifests


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A real bundle from a fabricated export (the builder does not parse the model)."""
    from hostile_kit import fake_export
    from robustedge.device.host.bundle import build_bundle

    root = tmp_path_factory.mktemp("fuzzbundle")
    fake_export(root / "run")
    return build_bundle(root / "run", root / "bundle")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@st.composite
def manifest_edits(draw, good: dict) -> bytes:
    """The good manifest with one top-level or nested value replaced by a random one."""
    m = json.loads(json.dumps(good))
    key = draw(st.sampled_from(sorted(m)))
    if isinstance(m[key], dict) and m[key] and draw(st.booleans()):
        sub = draw(st.sampled_from(sorted(m[key])))
        m[key][sub] = draw(json_values)
    else:
        m[key] = draw(json_values)
    if draw(st.booleans()) and isinstance(m.get("files"), dict):
        m["files"] = {draw(st.text(max_size=30)): draw(json_values), **m["files"]}
    return json.dumps(m).encode()


def check_accepted_manifest(b: Path, manifest: dict) -> None:
    """A manifest ``verify_bundle`` accepted must describe the bundle: every listed file is a
    plain file inside it with the listed size and full sha256 (hashed here), and every format's
    model file is one of them."""
    import hashlib

    files = manifest["files"]
    assert isinstance(files, dict) and files
    root = b.resolve()
    for rel, meta in files.items():
        path = (b / rel).resolve()
        assert root in path.parents and path.is_file() and not (b / rel).is_symlink(), rel
        data = path.read_bytes()
        assert meta["bytes"] == len(data), rel
        assert meta["sha256"] == hashlib.sha256(data).hexdigest(), rel
    assert manifest["formats"] and all(a["file"] in files for a in manifest["formats"].values())


@contextlib.contextmanager
def fuzzed_bundle(bundle_dir: Path, data: bytes) -> Iterator[Path]:
    """A scratch copy of ``bundle_dir`` whose manifest.json holds ``data``."""
    work = Path(tempfile.mkdtemp(prefix="fuzz-bundle-"))
    try:
        b = work / "b"
        shutil.copytree(bundle_dir, b)
        (b / "manifest.json").write_bytes(data)
        yield b
    finally:
        shutil.rmtree(work)


@FUZZ
@given(data=st.data())
def test_fuzz_bundle_manifest(bundle_dir, data):
    """A fuzzed manifest is refused in one line, or accepted only when it is true."""
    from robustedge.device.board.bundle_format import verify_bundle

    good = (bundle_dir / "manifest.json").read_bytes()
    raw = data.draw(
        st.one_of(
            any_bytes([good]),
            json_values.map(lambda v: json.dumps(v).encode()),
            manifest_edits(json.loads(good)),
        )
    )
    with fuzzed_bundle(bundle_dir, raw) as b:
        try:
            manifest = verify_bundle(b)
        except RobustEdgeError as e:
            assert "\n" not in str(e).strip(), str(e)  # refused in one line
            return
        check_accepted_manifest(b, manifest)


# ---------------------------------------------------------------- recipes

RECIPE = """name: fuzz
seed: 0
data: {name: digits}
teacher:
  train: {model: tiny, adversary: none, epochs: 1}
evaluate: {attacks: [pgd], eps: [0.1]}
compress:
  - {name: p, method: prox, sparsity: [0.5, 0.9], epochs: 1, finetune_epochs: 1}
export: {formats: [onnx]}
devices: {targets: [local]}
"""

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 500),
    st.floats(-2, 2, allow_nan=False),
    st.text(max_size=10),
    st.sampled_from(["!!python/name:os.system", "*x", "&x a", "!t 1", "[", "{a: 1"]),
)


@st.composite
def recipe_texts(draw) -> str:
    """The good recipe with one line rewritten (value replaced, indentation or tags added)."""
    lines = RECIPE.splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    key = lines[i].split(":")[0]
    value = draw(yaml_scalars)
    lines[i] = f"{key}: {value if isinstance(value, str) else json.dumps(value)}"
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=st.one_of(st.text(max_size=300), recipe_texts(), mutated(RECIPE.encode())))
def test_fuzz_recipe(text):
    from robustedge.recipe import parse_recipe

    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        recipe = parse_recipe(text, "fuzz.yaml")
    except RobustEdgeError as e:
        one_line(e)
        assert str(e).startswith("fuzz.yaml:"), str(e)
        return
    assert recipe.name
