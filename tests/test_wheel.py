"""robustedge as a user gets it: the wheel built from this tree, installed into a folder of its
own, imported from a script outside the repository (issue 22: "pip install robustedge into
their own project and write ten lines of Python around their own model")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_SCRIPT = """
import sys
import numpy as np
import torch
import torch.nn as nn
import robustedge
from robustedge import api

assert robustedge.__file__.startswith(sys.argv[1]), robustedge.__file__
rng = np.random.default_rng(0)
y = np.arange(320) % 2
x = rng.random((320, 1, 8, 8), dtype=np.float32) * 0.3
x[y == 1, :, :4] += 0.6                       # class 1: the top half is lit
data = api.from_arrays(x[:256], y[:256], x[256:], y[256:], name="mine")
torch.manual_seed(0)  # the user's own initialisation (unseeded, 1 run in 6 had not learned yet)
net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                    nn.ReLU(), nn.Flatten(), nn.Linear(512, 2))
t = api.train(out=sys.argv[2] + "/teacher", model=net, data=data, epochs=4, batch_size=32)
s = api.compress(out=sys.argv[2] + "/student", teacher=str(t.run), data=data,
                 teacher_model=net, sparsity=0.5, epochs=1, batch_size=32)
print("teacher", t.clean_acc, "student", s.clean_acc, s.sparsity["global"])
"""


def build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of this tree (a build never writes into the checkout)."""
    src = tmp / "tree"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    cmd = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)]
    subprocess.run(cmd, check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("robustedge-*.whl")
    return wheel


@pytest.mark.slow
def test_the_installed_wheel_runs_a_users_script(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "robustedge/py.typed" in names  # type hints reach the user's checker
    assert "robustedge/device/board/runner.py" in names  # bundles ship the board runner
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install"]
    subprocess.run([*pip, "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    user = tmp_path / "project"
    user.mkdir()
    (user / "train_mine.py").write_text(USER_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "train_mine.py", str(site), str(user / "runs")],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    words = proc.stdout.split()
    assert words[0] == "teacher" and float(words[1]) > 0.9  # the lit half is easy to learn
    assert float(words[4]) == pytest.approx(0.5, abs=0.01)
    assert (user / "runs" / "student" / "model.safetensors").is_file()
    cli = subprocess.run(
        [str(site / "bin" / "robustedge"), "--help"], env=env, capture_output=True, text=True
    )
    assert cli.returncode == 0 and "compress" in cli.stdout, cli.stderr[-2000:]
