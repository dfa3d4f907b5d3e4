"""Helpers shared by the hostile-input and guard tests: a sandbox that runs the real CLI and
checks how it fails, payloads that would run code, and fabricated export folders."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pytest

from robustedge.cli import main

MAX_LINES = 4  # click usage errors take up to 4 lines; our own errors take 1


class Evil:
    """Unpickling this runs a shell command that creates the PWNED marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Sandbox:
    def __init__(self, root: Path, capsys) -> None:
        self.root, self.capsys = root, capsys
        self.marker = root / "PWNED"

    def files(self) -> set:
        return {p for p in self.root.rglob("*") if p.is_file() or p.is_symlink()}

    def refuse(
        self, argv: Sequence[str], expect: Optional[str] = None, allowed: Iterable[Path] = ()
    ) -> str:
        """Run the CLI; assert a short non-zero failure and no stray files; return stderr."""
        before = self.files()
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        out, err = self.capsys.readouterr()
        code = exc.value.code
        assert code not in (0, None), f"exit {code}: {out}{err}"
        text = (out + err).strip()
        assert "Traceback" not in text, text
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert 1 <= len(lines) <= MAX_LINES and len(err) < 800, err
        assert "weights_only=False" not in text and "will likely succeed" not in text, text
        if expect is not None:
            assert expect.lower() in err.lower(), err
        new = self.files() - before
        allowed = [Path(a).resolve() for a in allowed]
        stray = [
            p for p in new if not any(p.resolve().is_relative_to(a) for a in allowed)
        ]  # a new file is only fine inside the folder the command was told to write to
        assert not stray, f"files written outside the run's folder: {stray}"
        assert not self.marker.exists(), "a hostile payload ran"
        return err


def sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_export(run: Path, artifacts=None, eval_sets=None, eval_sha=None) -> Path:
    """RUN/export/ with a (dummy) onnx file, two eval sets and export.json naming them."""
    exp = run / "export"
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "model.onnx").unlink(missing_ok=True)  # never write through a planted symlink
    (exp / "model.onnx").write_bytes(b"not really onnx")
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.arange(4, dtype=np.int64)
    for name in ("eval_clean.npz", "eval_transfer.npz"):
        np.savez(exp / name, x=x, y=y)
    sets = {"clean": "eval_clean.npz", "transfer": "eval_transfer.npz"}
    doc = {
        "run": str(run),
        "data": "digits",
        "num_classes": 10,
        "input_shape_nchw": [1, 8, 8],
        "artifacts": artifacts
        if artifacts is not None
        else {"onnx": {"file": "model.onnx", "sha256": sha(exp / "model.onnx")}},
        "eval_sets": eval_sets if eval_sets is not None else sets,
        "eval_sha256": eval_sha
        if eval_sha is not None
        else {k: sha(exp / v) for k, v in sets.items()},
        "transfer_attack": {"attack": "pgd", "eps": 0.1},
    }
    (exp / "export.json").write_text(json.dumps(doc))
    return exp


def fake_int8_export(run: Path) -> Path:
    """A run's export folder as `robustedge export` writes it: an artifact file, the clean
    and transfer eval sets, and export.json recording their sha256 (the artifact's bytes are
    opaque to the bundle: only its hash is checked, never its content)."""
    from robustedge.hashing import sha256_file

    ex = run / "export"
    ex.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (ex / "model_int8.tflite").write_bytes(rng.bytes(4096))
    x = rng.random((16, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 16).astype(np.int64)
    np.savez(ex / "eval_clean.npz", x=x, y=y)
    np.savez(ex / "eval_transfer.npz", x=np.clip(x + 0.05, 0, 1).astype(np.float32), y=y)
    art = {
        "file": "model_int8.tflite",
        "sha256": sha256_file(ex / "model_int8.tflite"),
        "bytes": 4096,
        "input": {"layout": "NHWC", "dtype": "int8", "scale": 1 / 255, "zero_point": -128},
        "output": {"dtype": "int8", "scale": 0.1, "zero_point": 0},
    }
    export = {
        "run": str(run),
        "data": "digits",
        "num_classes": 10,
        "input_shape_nchw": [1, 8, 8],
        "artifacts": {"tflite-int8": art},
        "eval_sets": {"clean": "eval_clean.npz", "transfer": "eval_transfer.npz"},
        "eval_sha256": {
            "clean": sha256_file(ex / "eval_clean.npz"),
            "transfer": sha256_file(ex / "eval_transfer.npz"),
        },
        "transfer_attack": {"attack": "pgd", "eps": 0.1},
    }
    (ex / "export.json").write_text(json.dumps(export))
    return run


def rewrite_manifest(bundle: Path, edit) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    head = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(">u1").tobytes()


def mnist_dir(root: Path, train_images: bytes) -> Path:
    d = root / "mnist"
    d.mkdir()
    ok_img = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    ok_lab = idx_bytes(np.zeros(2, np.uint8))
    (d / "train-images-idx3-ubyte").write_bytes(train_images)
    (d / "train-labels-idx1-ubyte").write_bytes(ok_lab)
    (d / "t10k-images-idx3-ubyte").write_bytes(ok_img)
    (d / "t10k-labels-idx1-ubyte").write_bytes(ok_lab)
    return d


TRAIN = ["train", "--epochs", "1", "--model", "tiny", "--adversary", "none", "--no-progress"]
