"""The examples/ scripts, each run as a user runs it (a fresh interpreter) on a tiny setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, cwd: Path, **env_vars: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **env_vars}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def image_folder(root: Path, n: int = 24, size: int = 12) -> Path:
    """Two classes told apart by brightness (top half vs bottom half lit), PNG."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", 8)):
        for c, name in enumerate(("bottom", "top")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                a = rng.integers(0, 40, (size, size)).astype(np.uint8)
                rows = slice(0, size // 2) if c else slice(size // 2, size)
                a[rows] += 200
                Image.fromarray(a).save(root / split / name / f"{i:03d}.png")
    return root


@pytest.mark.export
@pytest.mark.slow
def test_compress_own_model_example(tmp_path):
    images = image_folder(tmp_path / "images")
    out = run_example(
        "compress_own_model.py",
        "--images", str(images), "--out", str(tmp_path / "runs"), "--epochs", "1",
        "--sparsity", "0.5",
        cwd=tmp_path,
    )  # fmt: skip
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert set(lines) >= {"teacher", "student", "int8", "board"}
    assert (tmp_path / "runs" / "student" / "export" / "model_int8.tflite").is_file()
    assert "'clean'" in lines["board"] and "Square" in lines["board"]
    assert "50% of prunable weights zero" in out


@pytest.mark.slow
def test_sparsity_sweep_example(tmp_path, small_digits):
    """On the session's digits cut (an npz file, --data npz with $ROBUSTEDGE_DATA_DIR): the
    table's rows and the sparsities reached do not depend on the data's size."""
    out = run_example(
        "sparsity_sweep.py",
        "--out", str(tmp_path / "sweep"), "--model", "tiny", "--epochs", "1",
        "--sparsity", "0.5", "0.75", "--data", "npz",
        cwd=tmp_path, ROBUSTEDGE_DATA_DIR=small_digits,
    )  # fmt: skip
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[:2] for r in rows] == [["teacher", "0.0%"], ["student", "0.5"], ["student", "0.75"]]
    assert rows[1][2] == "50.0%" and rows[2][2] == "75.0%"  # sparsity reached exactly
    assert (tmp_path / "sweep" / "student-0.75" / "metrics.json").is_file()
