"""A real two-node Ray cluster on loopback: ``ray start --head`` and a second node started as
its own process (1 CPU each, so the sweep's stages really go to both), joined by
``robustedge run RECIPE --executor ray --address 127.0.0.1:PORT``. The stages' hashes and
outputs equal the serial run's; a worker node killed mid-run (while a stage runs on it) has
its stages retried by Ray and the recipe still finishes, with no stage recorded half-written.
One cluster serves both runs.

The sweep's stages take seconds (all of digits, a PGD evaluation in each student), unlike
test_ray.py's sweep on 192 images, and each runs in a fresh worker process (max_calls=1): a
node's workers start as slowly as the other's, so the second node runs some stages (when Ray
could hand a finished task's warm worker the next queued task of its kind, a CI run under load
had every stage run on the head while the second node's worker started)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from _ray_fixtures import wait_for_task
from robustedge.recipe.executors import ExecutorSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="the [scale] extra (Ray) is not installed"
    ),
]
RAY = str(Path(sys.executable).with_name("ray"))
RECIPE = """\
name: cluster-sweep
seed: 0
data: {{name: npz, data_dir: {data}}}
teacher:
  load: {teacher}
evaluate:
  attacks: [fgsm]
  eps: [0.1]
compress:
  - name: prox
    method: prox
    adversary: none
    eps: 0.0
    sparsity: [0.5, 0.8]
    epochs: 1
    finetune_epochs: 1
  - name: mag
    method: magnitude
    adversary: none
    eps: 0.0
    sparsity: [0.5]
    epochs: 1
    finetune_epochs: 0
"""
STAGE_TASKS = ("teacher", "student-", "eval-")  # the Ray tasks of the sweep's stages
NODE_LINE = re.compile(r"stage (\S+) ran on Ray node (\w+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """A Ray head and worker nodes on this machine, each ``ray start --block`` in its own
    process group (ended by group, so every raylet and worker process it started goes too).
    Token authentication: one random token shared through the environment."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            # a node told to stop (SIGTERM, on leaving) stops at once: no drain of up to 30 s
            # for its tasks, as there are none left to drain
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
        self.nodes: Dict[str, subprocess.Popen] = {}

    def start(self, name: str, head: bool = False) -> None:
        ports = ["node-manager", "object-manager", "dashboard-agent-listen"]
        ports += ["dashboard-agent-grpc", "metrics-export", "runtime-env-agent"]
        args = [f"--{p}-port={free_port()}" for p in ports]
        args += ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
        if head:
            args += ["--head", f"--port={self.port}", "--include-dashboard=false"]
            args += [f"--ray-client-server-port={free_port()}", f"--temp-dir={self.tmp}"]
        else:
            args += [f"--address={self.address}"]
        log = open(self.tmp / f"{name}.log", "w")
        self.nodes[name] = subprocess.Popen(
            [RAY, "start", "--block", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()

    def wait_nodes(self, n: int, timeout: float = 180) -> None:
        """Until the cluster has ``n`` live nodes (asked from a separate Ray driver, once the
        head's port accepts connections: under load the head can take longer to come up than
        ray.init waits for it, and a driver that missed it never recovered)."""
        script = (
            "import ray, socket, sys, time\n"
            f"deadline = time.monotonic() + {timeout}\n"
            "while True:\n"
            "    try:\n"
            f"        socket.create_connection(('127.0.0.1', {self.port}), 1).close()\n"
            "        break\n"
            "    except OSError:\n"
            "        if time.monotonic() > deadline: sys.exit(1)\n"
            "        time.sleep(0.2)\n"
            f"ray.init(address={self.address!r}, log_to_driver=False)\n"
            "while time.monotonic() < deadline:\n"
            f"    if sum(x['Alive'] for x in ray.nodes()) == {n}: sys.exit(0)\n"
            "    time.sleep(0.5)\n"
            "sys.exit(1)\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", script],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )
        assert r.returncode == 0, f"the cluster never had {n} nodes: {r.stderr[-2000:]}"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.nodes.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> LoopbackCluster:
        return self

    def __exit__(self, *exc) -> None:
        for name in list(self.nodes):
            self.kill(name, signal.SIGTERM)
        _kill_stragglers(str(self.tmp))  # anything a node's group left behind
        shutil.rmtree(self.tmp, ignore_errors=True)


def _kill_stragglers(marker: str) -> None:
    """SIGKILL processes whose command line names this cluster's folder (our own only)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def records(out: Path) -> Dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "stages").glob("*/stage.json")}


def serial_run(recipe: Path, out: Path) -> dict:
    from robustedge.recipe import load_recipe
    from robustedge.recipe.stages import run_recipe

    return run_recipe(load_recipe(recipe), out, executor=ExecutorSpec())


def cluster_run(recipe: Path, out: Path, env: dict, *executor: str) -> subprocess.Popen:
    """`robustedge -v run RECIPE --out OUT` with the ``executor`` options, in the background."""
    cmd = [sys.executable, "-m", "robustedge.cli", "-v", "run", str(recipe), "--out", str(out)]
    cmd += list(executor)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


VOLATILE = {"seconds", "finished", "rss_peak_bytes", "memory"}


def normalised(path: Path, out: Path):
    """A file's content with the output folder's path and timings taken out."""
    text = path.read_bytes().replace(str(out).encode(), b"OUT")
    if path.suffix != ".json":
        return text

    def drop(v):
        if isinstance(v, dict):
            return {k: drop(x) for k, x in v.items() if k not in VOLATILE}
        if isinstance(v, list):
            return [drop(x) for x in v]
        return v

    return drop(json.loads(text))


def same_outputs(serial: Path, other: Path) -> None:
    """Every stage of ``other`` has the serial run's outputs: weights and masks byte for byte,
    the other files but for timings; its input hash is the serial one wherever its upstream
    stages' digests are (timings in metrics files make digests differ run to run)."""
    s_rec, o_rec = records(serial), records(other)
    assert s_rec.keys() == o_rec.keys() and len(s_rec) == 8
    for sid, rec in s_rec.items():
        if o_rec[sid]["upstream"] == rec["upstream"]:
            assert o_rec[sid]["input_hash"] == rec["input_hash"], sid
        assert o_rec[sid]["outputs"].keys() == rec["outputs"].keys(), sid
        for rel, sha in rec["outputs"].items():
            if rel.endswith(".safetensors"):  # weights and masks: the same bytes
                assert o_rec[sid]["outputs"][rel] == sha, (sid, rel)
            assert normalised(serial / rel, serial) == normalised(other / rel, other), rel


def ran_on(stderr: str) -> Dict[str, str]:
    return dict(NODE_LINE.findall(stderr))


def _per_node(stderr: str) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for node in ran_on(stderr).values():
        counts[node[:8]] = counts.get(node[:8], 0) + 1
    return counts


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, digits) -> Path:
    """The sweep on digits saved as an npz file, with a tiny CNN trained 3 epochs on it as the
    teacher (the stages' processes then read a file: no scikit-learn import, as digits' own
    loader has, in each Ray worker)."""
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    folder = tmp_path_factory.mktemp("recipe")
    data = folder / "digits.npz"
    arrays = ("x_train", "y_train", "x_test", "y_test")
    np.savez(data, **{k: getattr(digits, k) for k in arrays})
    cfg = dict(model="tiny", adversary="none", epochs=3, lr=1e-2, seed=0)
    train_run(TrainConfig(data="npz", data_dir=str(data), **cfg), folder / "teacher")
    path = folder / "sweep.yaml"
    path.write_text(RECIPE.format(data=data, teacher=folder / "teacher"))
    return path


@pytest.fixture(scope="module")
def serial(recipe, tmp_path_factory) -> Path:
    """The recipe run in order in this process, once for the module (only read by the tests)."""
    out = tmp_path_factory.mktemp("serial") / "serial"
    serial_run(recipe, out)
    return out


@pytest.fixture(scope="module")
def cluster():
    """One two-node cluster for the module's two runs (the second kills its worker node)."""
    with LoopbackCluster() as c:
        c.start("head", head=True)
        c.start("worker")
        c.wait_nodes(2)
        yield c


def two_nodes(cluster: LoopbackCluster) -> LoopbackCluster:
    """``cluster`` with its worker node up (restarted if a test before this one killed it)."""
    if "worker" not in cluster.nodes:
        cluster.start("worker")
        cluster.wait_nodes(2)
    return cluster


def test_a_two_node_cluster_gives_the_serial_run(recipe, serial, cluster, tmp_path):
    two_nodes(cluster)
    # --executor ray --address: the stages run as Ray tasks on that cluster's two nodes
    flags = ["--executor", "ray", "--address", cluster.address]
    proc = cluster_run(recipe, tmp_path / "ray", cluster.env, *flags)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    nodes = ran_on(err)
    assert len(nodes) == 8, err[-3000:]  # every stage said where it ran
    assert len(set(nodes.values())) == 2, nodes  # and both nodes ran some
    same_outputs(serial, tmp_path / "ray")


def test_a_worker_node_killed_mid_run_has_its_stages_retried(recipe, serial, cluster, tmp_path):
    worker = two_nodes(cluster).nodes["worker"].pid
    flags = ["--executor", "ray", "--address", cluster.address]
    proc = cluster_run(recipe, tmp_path / "ray", cluster.env, *flags)
    try:
        # the worker node is killed while it runs a stage (SIGKILL to the node's `ray start`,
        # raylet and agents; its Ray workers, in process groups of their own, end with their
        # raylet)
        stage = wait_for_task(worker, STAGE_TASKS, lambda: proc.poll() is None)
        cluster.kill("worker")
        rest, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"killed during {stage}: exit {proc.returncode}, stages per node {_per_node(err)}")
    # killed while it ran a stage, that stage's task is retried on the head (Ray reruns a task
    # whose node died): the recipe finishes (with no retries it ends "error: stage ...")
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert all(s["status"] == "done" for s in summary["stages"])
    same_outputs(serial, tmp_path / "ray")
    assert stage in ran_on(err)  # the killed stage was retried (on the head) and finished
