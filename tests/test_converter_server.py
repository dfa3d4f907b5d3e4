"""The suite's TFLite conversions run in $ROBUSTEDGE_CONVERTER_PYTHON, a fork server preloaded
with TensorFlow and onnx2tf (tests/conftest.py, tests/cli_fork_server.py). It must convert to
the bytes a new interpreter converts to, and answer as an interpreter does: exit status, death
by a signal, argv, the caller's folder."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import skip_unless_installed
from robustedge.export.tflite import CONVERTER_PYTHON_ENV, convert_tflite

skip_unless_installed("onnx2tf")


@pytest.fixture(scope="module")
def server() -> str:
    python = os.environ.get(CONVERTER_PYTHON_ENV)
    if not python or python == sys.executable:
        pytest.skip(f"{CONVERTER_PYTHON_ENV} is not the tests' fork server")
    return python


def digests(folder: Path) -> dict:
    """sha256 of every TFLite model in ``folder``."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.tflite")}


def test_a_conversion_gives_a_new_interpreters_bytes(server, tmp_path, monkeypatch):
    """float32 and int8 models, and the ONNX file as onnx2tf rewrites it, byte for byte."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3)
    ).eval()
    onnx = tmp_path / "m.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 8, 8), onnx, input_names=["x"], dynamo=False)
    calib = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
    monkeypatch.setenv("ROBUSTEDGE_CACHE_TFLITE", "off")
    got = {}
    for name, python in (("server", server), ("new", sys.executable)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.onnx").write_bytes(onnx.read_bytes())
        monkeypatch.setenv(CONVERTER_PYTHON_ENV, python)
        found = convert_tflite(tmp_path / name / "m.onnx", tmp_path / name, "x", calib)
        assert set(found) == {"float32", "int8"}
        onnx_now = hashlib.sha256((tmp_path / name / "m.onnx").read_bytes()).hexdigest()
        got[name] = (digests(found["int8"].parent), onnx_now)
    assert got["server"] == got["new"] and len(got["new"][0]) >= 2
    assert (tmp_path / "new" / "m.onnx").read_bytes() != onnx.read_bytes()  # it was rewritten


def test_answers_as_an_interpreter(server, tmp_path):
    code = "import os, sys; print(sys.argv, os.getcwd(), sys.path[0]); sys.exit(int(sys.argv[1]))"
    r = subprocess.run([server, "-c", code, "3"], capture_output=True, text=True, cwd=tmp_path)
    want = subprocess.run(
        [sys.executable, "-c", code, "3"], capture_output=True, text=True, cwd=tmp_path
    )
    assert (r.returncode, r.stdout) == (want.returncode, want.stdout) == (3, r.stdout)
    assert str(tmp_path) in r.stdout
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    assert subprocess.run([server, "-c", crash]).returncode == -signal.SIGSEGV
    r = subprocess.run([server, "-c", "raise ValueError('x')"], capture_output=True, text=True)
    assert r.returncode == 1 and "ValueError: x" in r.stderr
    r = subprocess.run([server, "-m", "json.tool", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "json.tool" in r.stdout
