"""Crash safety in the test suite: `kill -9` a few stages at random points (issue 15).

The full sweep (10 points for each of train, compress, export, bundle, deploy and a recipe run)
is ``benchmarks/crash.py``, measured in ``benchmarks/measured/crash.json``; these tests keep the
two cheapest promises checked on every ``make test``: a bundle being rebuilt is never lost, and
a killed training run resumes to a loadable, finished run. The commands are forked from one
preloaded process (``_forked_cli``): no interpreter start in the timed runs, so the random kill
points, drawn over a run's duration, fall in the command's work rather than in its imports.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from _forked_cli import ForkedCli

pytestmark = pytest.mark.crash
PRELOAD = ("sklearn.datasets", "robustedge.device.host.bundle")  # digits; the bundle builder


@pytest.fixture(scope="module")
def cli():
    forked = ForkedCli({**os.environ, "OMP_NUM_THREADS": "1"}, preload=PRELOAD)
    yield forked
    forked.close()


def kill_after(cli: ForkedCli, args: list, delay: float, cwd: Path) -> bool:
    """`robustedge ARGS`, SIGKILLed after ``delay`` s unless it ended first (then False)."""
    call = cli.start(args, cwd)
    if call.wait(timeout=delay) is not None:
        return False
    os.kill(call.pid, signal.SIGKILL)
    call.wait()
    print(f"killed after {delay:.2f} s: {' '.join(map(str, args[:1]))}")
    return True


def timed(cli: ForkedCli, args: list, cwd: Path) -> float:
    t = time.perf_counter()
    call = cli.start(args, cwd)
    assert call.wait() == 0, call.stderr()
    return time.perf_counter() - t


def test_killed_bundle_rebuild_never_loses_the_finished_bundle(tmp_path, cli):
    from hostile_kit import fake_export
    from robustedge.device.board.bundle_format import verify_bundle

    fake_export(tmp_path / "run")
    cmd = ["bundle", tmp_path / "run", "--out", tmp_path / "b"]
    full = timed(cli, cmd, tmp_path)
    files = verify_bundle(tmp_path / "b")["files"]
    assert any(rel.startswith("models/") for rel in files)
    rng = random.Random(0)
    for _ in range(3):
        kill_after(cli, cmd, rng.uniform(0.3 * full, full), tmp_path)
        # old or new, always complete (verify_bundle raises on a missing or damaged file)
        assert verify_bundle(tmp_path / "b")["files"] == files
    timed(cli, cmd, tmp_path)
    assert verify_bundle(tmp_path / "b")["files"] == files


@pytest.mark.slow
def test_killed_training_resumes_to_a_finished_run(tmp_path, cli):
    from robustedge.io import read_json
    from robustedge.models import load_model

    out = tmp_path / "r"
    args = ["--model", "tiny", "--adversary", "none", "--epochs", "4", "--no-progress"]
    full = timed(cli, ["train", *args, "--out", tmp_path / "ref"], tmp_path)
    rng = random.Random(1)
    for _ in range(2):
        resume = ["--resume"] if out.exists() and any(out.iterdir()) else []
        kill_after(cli, ["train", *args, "--out", out, *resume], rng.uniform(0, full), tmp_path)
        if (out / "metrics.json").is_file():  # finished before the kill: must be whole
            read_json(out / "metrics.json")
            load_model(out)
    resume = ["--resume"] if out.exists() and any(out.iterdir()) else []
    timed(cli, ["train", *args, "--out", out, *resume], tmp_path)
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
