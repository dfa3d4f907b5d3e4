"""Crash safety in the test suite: `kill -9` a few stages at random points (issue 15).

The full sweep (10 points for each of train, compress, export, bundle, deploy and a recipe run)
is ``benchmarks/crash.py``, measured in ``benchmarks/measured/crash.json``; these tests keep the
two cheapest promises checked on every ``make test``: a bundle being rebuilt is never lost, and
a killed training run resumes to a loadable, finished run.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.crash
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from crash import cli, run, run_and_kill  # noqa: E402  (the benchmark's own kill loop)


def kill_after(cmd: list, delay: float, cwd: Path) -> bool:
    return run_and_kill([str(c) for c in cmd], cwd, delay)[0]


def timed(cmd: list, cwd: Path) -> float:
    t = time.perf_counter()
    proc = run([str(c) for c in cmd], cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return time.perf_counter() - t


def test_killed_bundle_rebuild_never_loses_the_finished_bundle(tmp_path):
    from hostile_kit import fake_export
    from robustedge.device.board.bundle_format import verify_bundle

    fake_export(tmp_path / "run")
    cmd = cli("bundle", tmp_path / "run", "--out", tmp_path / "b")
    full = timed(cmd, tmp_path)
    files = verify_bundle(tmp_path / "b")["files"]
    assert any(rel.startswith("models/") for rel in files)
    rng = random.Random(0)
    for _ in range(3):
        kill_after(cmd, rng.uniform(0.3 * full, full), tmp_path)
        # old or new, always complete (verify_bundle raises on a missing or damaged file)
        assert verify_bundle(tmp_path / "b")["files"] == files
    timed(cmd, tmp_path)
    assert verify_bundle(tmp_path / "b")["files"] == files


@pytest.mark.slow
def test_killed_training_resumes_to_a_finished_run(tmp_path):
    from robustedge.io import read_json
    from robustedge.models import load_model

    out = tmp_path / "r"
    args = ["--model", "tiny", "--adversary", "none", "--epochs", "4", "--no-progress"]
    full = timed(cli("train", *args, "--out", tmp_path / "ref"), tmp_path)
    rng = random.Random(1)
    for _ in range(2):
        resume = ["--resume"] if out.exists() and any(out.iterdir()) else []
        kill_after(cli("train", *args, "--out", out, *resume), rng.uniform(0, full), tmp_path)
        if (out / "metrics.json").is_file():  # finished before the kill: must be whole
            read_json(out / "metrics.json")
            load_model(out)
    resume = ["--resume"] if out.exists() and any(out.iterdir()) else []
    timed(cli("train", *args, "--out", out, *resume), tmp_path)
    # killed twice and resumed, the run equals the uninterrupted reference (one thread, same
    # seed): same weights bit for bit, same history and accuracies
    got, ref = read_json(out / "metrics.json"), read_json(tmp_path / "ref" / "metrics.json")
    assert got["clean_acc"] == ref["clean_acc"] > 0.5
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(got["history"]) == strip(ref["history"])
    a, b = load_model(out)[0].state_dict(), load_model(tmp_path / "ref")[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_swap_cut_between_its_two_renames_gives_the_finished_folder_back(tmp_path):
    """kill -9 between `final -> .final.old` and `tmp -> final`: the next writer restores it."""
    from robustedge.io import staging_dir

    final = tmp_path / "export"
    (tmp_path / ".export.old").mkdir()
    (tmp_path / ".export.old" / "export.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with staging_dir(final):
            raise RuntimeError("the new export failed")
    assert (final / "export.json").read_text() == "{}"
