"""Data-parallel training under torchrun (gloo on CPU): same weights as one process with the
same global batch, identical masks / method state on every rank, rank checks, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import _dist_fixtures as shared
from _dist_fixtures import ENV, one_process_config
from conftest import run_cli
from robustedge import distributed
from robustedge.errors import CheckpointError
from robustedge.training.run import train_run

ROOT = Path(__file__).resolve().parent

# the shared runs (fixtures of tests/_dist_fixtures.py)
dist_data, one_process, uninterrupted = shared.dist_data, shared.one_process, shared.uninterrupted


@pytest.fixture(autouse=True)
def dist_env(monkeypatch) -> None:
    """What every job here runs with (``run_cli`` passes this process's environment on)."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


def cli(*args: str) -> subprocess.CompletedProcess:
    """`robustedge ARGS` in a process of its own (forked from the tests' preloaded one): the
    launcher; torchrun and its ranks are new interpreters, as for a user."""
    return run_cli(*args)


def _wait_gone(marker: str, timeout: float = 60) -> None:
    """Wait until no process has ``marker`` on its command line (the ranks are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if marker.encode() in cmdline.read_bytes():
                    alive = True
                    break
            except OSError:
                continue
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes for {marker} still running")


def weights(run: Path):
    return load_file(str(run / "model.safetensors"))


def test_sharding_is_the_global_batch_split():
    """Rank r of W takes every W-th index: together the ranks' batches are the one-process
    batch (torch's DistributedSampler, shuffled by seed and epoch)."""
    one = distributed.shard_indices(256, 3, 1, distributed.World(0, 1))
    r0 = distributed.shard_indices(256, 3, 1, distributed.World(0, 2))
    r1 = distributed.shard_indices(256, 3, 1, distributed.World(1, 2))
    for k in range(4):  # global batch 64 = 32 per rank
        assert sorted(r0[32 * k : 32 * k + 32] + r1[32 * k : 32 * k + 32]) == sorted(
            one[64 * k : 64 * k + 64]
        )
    assert distributed.shard_indices(256, 3, 2, distributed.World(0, 1)) != one
    with pytest.raises(Exception, match="multiple of the 2 processes"):
        distributed.per_rank_batch(63, distributed.World(0, 2))


def test_checksum_sees_values_and_order():
    a = [torch.arange(6.0).view(2, 3)]
    assert torch.equal(distributed.checksum(a), distributed.checksum([a[0].clone()]))
    assert not torch.equal(distributed.checksum(a), distributed.checksum([a[0].flip(1)]))
    b = a[0].clone()
    b[0, 0] += 1e-6
    assert not torch.equal(distributed.checksum(a), distributed.checksum([b]))


@pytest.fixture(scope="module")
def even_data(tmp_path_factory) -> str:
    """Digits cut to 1,024 training images (a multiple of 2 x 64: no sampler padding)."""
    from robustedge.data import load_dataset

    d = load_dataset("digits")
    path = tmp_path_factory.mktemp("even") / "digits1024.npz"
    np.savez(
        path,
        x_train=d.x_train[:1024],
        y_train=d.y_train[:1024],
        x_test=d.x_test[:200],
        y_test=d.y_test[:200],
    )
    return str(path)


@pytest.mark.slow
def test_two_processes_give_the_one_process_weights(tmp_path, even_data):
    args = ["--data", "npz", "--data-dir", even_data, "--model", "lenet5", "--adversary"]
    args += ["none", "--epochs", "2", "--batch-size", "64", "--lr", "0.01", "--device", "cpu"]
    r = cli("train", *args, "--nproc", "2", "--out", str(tmp_path / "ddp"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("run folder:") == 1  # rank 1 prints nothing
    assert "2 processes, global batch 64" in r.stdout
    cfg = one_process_config(even_data)  # the same config, trained in one process
    one = train_run(cfg, tmp_path / "one")
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "one")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    moved = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved < 1e-4
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert (m["world_size"], m["global_batch_size"], m["batch_per_rank"]) == (2, 64, 32)
    assert (one["world_size"], one["global_batch_size"]) == (1, 64)
    assert m["clean_acc"] == pytest.approx(one["clean_acc"], abs=0.01)
    # a 2-process checkpoint holds both ranks' random streams: resuming needs 2 processes
    with pytest.raises(CheckpointError, match="--nproc 2"):
        train_run(cfg, tmp_path / "ddp", resume=True)


@pytest.mark.slow
def test_compress_masks_and_method_state_identical_on_every_rank(tmp_path, one_process):
    """prox, ADMM and HYDRA with PGD-AT on 2 gloo ranks: each rank's masks and weights are
    the same (its own adversarial examples, its own random stream)."""
    out = tmp_path / "ranks"
    out.mkdir()
    methods = ["prox", "admm", "hydra"]
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        + [str(ROOT / "_ddp_worker.py"), str(one_process), str(out), *methods],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for method in methods:
        s0 = torch.load(out / f"rank0_{method}.pt", weights_only=True)
        s1 = torch.load(out / f"rank1_{method}.pt", weights_only=True)
        assert s0["world_size"] == 2
        assert s0["masks"].keys() == s1["masks"].keys() and s0["masks"]
        for n in s0["masks"]:
            assert torch.equal(s0["masks"][n], s1["masks"][n]), (method, n)
            kept = 1 - float(s0["masks"][n].float().mean())
            assert kept > 0.0
        for k in s0["weights"]:
            assert torch.equal(s0["weights"][k], s1["weights"][k]), (method, k)
        # per-rank adversarial examples: the ranks' random streams differ
        assert not torch.equal(s0["next_random_start"], s1["next_random_start"])


def _factory_module(tmp_path: Path, monkeypatch) -> None:
    """``rankfactories``, importable by the jobs started from here on."""
    (tmp_path / "rankfactories.py").write_text(
        "import os\n"
        "import torch\n"
        "from robustedge.models import MODELS\n\n"
        "def fails_on_rank1(input_shape, num_classes):\n"
        "    if os.environ.get('RANK') == '1':\n"
        "        raise ValueError('disk quota exceeded on rank 1')\n"
        "    return MODELS.get('tiny')(input_shape=input_shape, num_classes=num_classes)\n\n"
        "def rank_seeded(input_shape, num_classes):\n"
        "    torch.manual_seed(int(os.environ.get('RANK', '0')))\n"
        "    return MODELS.get('tiny')(input_shape=input_shape, num_classes=num_classes)\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{ENV.get('PYTHONPATH', '')}")


LEAVE_SCRIPT = """
import os, sys, threading, torch
from robustedge import distributed
before = threading.active_count(), len(os.listdir("/proc/self/task"))
with distributed.session(torch.device("cpu")):
    model = torch.nn.Linear(3, 2)
    torch.optim.SGD(model.parameters(), lr=0.1)  # torch's first optimizer: imports torch._dynamo
    distributed.gather_objects({"rank": os.environ["RANK"]})
after = threading.active_count(), len(os.listdir("/proc/self/task"))
print("threads", before, after, flush=True)
"""


@pytest.mark.slow
def test_leaving_the_session_joins_gloos_threads(tmp_path):
    """After the session no gloo worker thread is left to race the interpreter's exit (it
    aborted ranks with 'terminate called without an active exception', now and then, when
    the first optimizer was built inside the session and kept the process group alive)."""
    script = tmp_path / "leave.py"
    script.write_text(LEAVE_SCRIPT)
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        + ["--tee=3", str(script)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    counts = [line.split("threads ", 1)[1] for line in r.stdout.splitlines() if "threads " in line]
    assert len(counts) == 2, r.stdout
    for c in counts:
        before, after = c.split(") (")
        assert before.strip("( ") == after.strip(") "), c


def _train_factory(tmp_path: Path, monkeypatch, factory: str) -> subprocess.CompletedProcess:
    """`robustedge train --nproc 2` on a model factory of :func:`_factory_module`."""
    args = ["train", "--model", f"rankfactories:{factory}", "--adversary", "none"]
    args += ["--epochs", "1", "--device", "cpu", "--nproc", "2", "--out", str(tmp_path / "o")]
    _factory_module(tmp_path, monkeypatch)
    return cli(*args)


@pytest.mark.slow
def test_one_failing_rank_ends_the_job_with_one_line(tmp_path, monkeypatch):
    t0 = time.monotonic()
    r = _train_factory(tmp_path, monkeypatch, "fails_on_rank1")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "rank 1" in lines[0] and "disk quota exceeded on rank 1" in lines[0]
    assert time.monotonic() - t0 < 200  # ended, did not wait for the collective timeout
    assert not (tmp_path / "o" / "model.safetensors").exists()


@pytest.mark.slow
def test_diverging_ranks_are_caught(tmp_path, monkeypatch):
    """Weights that differ between ranks (here: a rank-seeded init) stop the job."""
    r = _train_factory(tmp_path, monkeypatch, "rank_seeded")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "ranks diverged: initial weights differ between rank 0 and rank 1" in r.stderr


@pytest.mark.slow
def test_resume_under_ddp_equals_uninterrupted(tmp_path, uninterrupted):
    """2-process PGD-AT killed after its first checkpoint, resumed with --nproc 2: the same
    weights, bit for bit, as the uninterrupted 2-process run."""
    args, full = uninterrupted
    args = [*args, "--nproc", "2"]
    part = tmp_path / "part"
    ckpt = part / "checkpoint" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "robustedge.cli", *args, "--out", str(part)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:  # Ctrl-C-like stop: torchrun ends both ranks (they run in their own sessions)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        _wait_gone(str(part))
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= epoch < 3, "the run was not interrupted mid-way"
    assert not (part / "model.safetensors").exists()
    resumed = cli(*args, "--out", str(part), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(full), weights(part)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL backend)")
@pytest.mark.slow
def test_two_gpus_nccl(tmp_path, dist_data):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA GPUs for 2 NCCL ranks, found {torch.cuda.device_count()}")
    r = cli(
        "train",
        "--data",
        "npz",
        "--data-dir",
        dist_data,
        "--model",
        "lenet5",
        "--epochs",
        "1",
        "--steps",
        "2",
        "--device",
        "cuda",
        "--nproc",
        "2",
        "--out",
        str(tmp_path / "o"),
    )
    assert r.returncode == 0, r.stderr
    assert "2 processes, global batch 64" in r.stdout


@pytest.mark.slow
def test_compress_and_manifold_train_cli_with_nproc(tmp_path, dist_data, one_process):
    out = tmp_path / "student"
    r = cli(
        "compress", "--teacher", str(one_process), "--method", "admm", "--sparsity", "0.8",
        "--epochs", "1", "--finetune-epochs", "1", "--adversary", "pgd", "--steps", "2",
        "--attack", "fgsm", "--device", "cpu", "--nproc", "2", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert (m["world_size"], m["global_batch_size"]) == (2, 16)  # compress's default batch
    assert m["sparsity"]["global"] == pytest.approx(0.8, abs=0.01)
    assert not (out / "checkpoint").exists() and r.stdout.count("sparsity (prunable") == 1
    vae = tmp_path / "vae"
    r = cli(
        "manifold", "train", "--data", "npz", "--data-dir", dist_data, "--epochs", "1",
        "--device", "cpu", "--nproc", "2", "--out", str(vae),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = json.loads((vae / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["test"]["mse_per_pixel"] < 0.2


@pytest.mark.slow
def test_awp_under_ddp_perturbs_by_the_global_batch(tmp_path, one_process):
    """With clean examples (no random starts) and no BatchNorm, 2 ranks of 32 train what 1
    process of 64 does, AWP included: its ascent gradient is averaged over the ranks before it
    perturbs (per-rank perturbations moved the weights by 0.08, checked by removing it)."""
    args = ["compress", "--teacher", str(one_process), "--method", "magnitude", "--sparsity"]
    args += ["0.8", "--epochs", "1", "--finetune-epochs", "1", "--adversary", "none"]
    args += ["--awp-gamma", "0.05", "--batch-size", "64", "--lr", "0.01", "--device", "cpu"]
    args += ["--attack", "fgsm"]
    r = cli(*args, "--nproc", "2", "--out", str(tmp_path / "ddp"))
    assert r.returncode == 0, r.stderr
    r = cli(*args, "--out", str(tmp_path / "one"))
    assert r.returncode == 0, r.stderr
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
