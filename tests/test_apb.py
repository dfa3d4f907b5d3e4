"""benchmarks/apb.py (the Adversarial Pruning Benchmark's protocol) on CPU on a tiny subset:
it trains, prunes, evaluates with an AutoAttack suite, writes the benchmark's table, labels
the reduced setting, and a second call reuses every finished step (resumable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import skip_unless_installed
from test_data import cifar_files, write_cifar

skip_unless_installed("torchattacks")
ROOT = Path(__file__).resolve().parent.parent


def run_apb(data: Path, out: Path) -> subprocess.CompletedProcess:
    args = [
        sys.executable, str(ROOT / "benchmarks" / "apb.py"), "--data-dir", str(data),
        "--out", str(out), "--models", "resnet18", "--methods", "harp",
        "--sparsities", "0.9", "--device", "cpu", "--teacher-epochs", "1", "--epochs", "1",
        "--finetune-epochs", "1", "--batch-size", "16", "--suite", "autoattack-quick",
        "--subset", "8", "--width", "0.125",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)


def test_apb_smoke_on_a_tiny_cifar(tmp_path):
    data = tmp_path / "cifar-10-batches-py"
    write_cifar(data, cifar_files(n=8))
    out = tmp_path / "apb"
    r = run_apb(data, out)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads((out / "apb.json").read_text())
    assert d["reduced"] is True and "8/255" in d["protocol"]
    rows = {(x["method"], x["sparsity"]): x for x in d["rows"]}
    assert set(rows) == {("teacher (PGD-AT)", 0.0), ("harp", 0.9)}
    harp = rows[("harp", 0.9)]
    assert harp["n"] == 8 and harp["suite"].startswith("worst case of AA/APGD-CE-25")
    assert harp["implementation"].startswith("torchattacks")
    assert 0.0 <= harp["autoattack"] <= harp["clean"] <= 100.0
    assert "REDUCED" in (out / "apb.md").read_text()
    student = next(p for p in out.iterdir() if p.name.endswith("__harp_0.9_e1+1"))
    metrics = (student / "metrics.json").stat().st_mtime_ns
    again = run_apb(data, out)  # every step is reused
    assert again.returncode == 0, again.stderr[-2000:]
    assert (student / "metrics.json").stat().st_mtime_ns == metrics
