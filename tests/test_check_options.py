"""`robustedge check`'s remaining options, each with an effect worked out by hand: a gates
file (per-model overrides), the latency-ratio regression threshold, the Markdown summary file;
and `device cache-key --path` (the folder a CI caches)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import run_cli
from test_gates import results, write

GATES = """\
gates:
  expect: ["clean>=0.9"]
  models:
    s1: {expect: ["robust>=0.75"]}
"""


def test_gates_file_applies_its_per_model_gate(tmp_path):
    a = write(tmp_path, "s1.json", results(run="s1", robust=0.70))
    b = write(tmp_path, "s2.json", results(run="s2", robust=0.70))
    g = tmp_path / "gates.yaml"
    g.write_text(GATES)
    r = run_cli("check", str(a), str(b), "--gates", str(g))
    # s1: clean 0.95 >= 0.9 holds, robust 0.70 < 0.75 fails; s2: only clean applies
    assert r.returncode == 1, r.stdout + r.stderr
    fails = [x for x in r.stdout.splitlines() if x.startswith("FAIL")]
    assert (
        len(fails) == 1 and fails[0].startswith("FAIL s1 @ qemu-aarch64") and "robust" in fails[0]
    )
    assert "2 of 3 gates hold" in r.stdout


def test_max_latency_growth_threshold(tmp_path):
    base, new = tmp_path / "base", tmp_path / "new"
    base.mkdir(), new.mkdir()
    write(base, "teacher.json", results(run="teacher", p50=0.50))
    write(base, "s1.json", results(run="s1", p50=0.35))  # 0.70 of the teacher
    write(new, "teacher.json", results(run="teacher", p50=0.50))
    write(new, "s1.json", results(run="s1", p50=0.40))  # 0.80: grew by 1/7 = 14.3 %
    paths = [str(new / "teacher.json"), str(new / "s1.json"), "--baseline", str(base)]
    strict = run_cli("check", *paths)  # default max 10 %
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert any("p50_vs_teacher" in x for x in strict.stdout.splitlines() if x.startswith("FAIL"))
    loose = run_cli("check", *paths, "--max-latency-growth", "0.15")
    assert loose.returncode == 0, loose.stdout + loose.stderr
    tight = run_cli("check", *paths, "--max-latency-growth", "0.14")
    assert tight.returncode == 1


def test_markdown_file_holds_the_failure(tmp_path):
    a = write(tmp_path, "s1.json", results(run="s1", robust=0.70))
    md = tmp_path / "summary.md"
    r = run_cli("check", str(a), "--expect", "robust>=0.75", "--markdown", str(md))
    assert r.returncode == 1
    text = md.read_text()
    assert "**1 of 1 gates failed**" in text and "s1" in text and "0.75" in text


def test_cache_key_path_follows_robustedge_cache(tmp_path):
    env = {**os.environ, "ROBUSTEDGE_CACHE": str(tmp_path / "c")}
    cmd = [sys.executable, "-m", "robustedge.cli", "device", "cache-key", "--arch", "aarch64"]
    r = subprocess.run([*cmd, "--path"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == str(tmp_path / "c" / "qemu" / "aarch64")
    key = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert key.returncode == 0 and key.stdout.strip().startswith("robustedge-qemu-aarch64-")
