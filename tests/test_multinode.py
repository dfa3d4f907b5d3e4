"""Two torchrun nodes on one machine (two agents on 127.0.0.1, one rendezvous): train and
compress give the one-process weights; a node that dies mid-job ends the job with one line on
the surviving node and leaves a checkpoint that resumes to the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pytest
import torch
from safetensors.torch import load_file

import _dist_fixtures as shared
from _dist_fixtures import ENV, TRAIN
from conftest import CliZygote, run_cli
from robustedge.commands.launch import JobLog, Nodes

# the shared runs (fixtures of tests/_dist_fixtures.py)
dist_data, one_process, uninterrupted = shared.dist_data, shared.one_process, shared.uninterrupted


@pytest.fixture(autouse=True)
def dist_env(monkeypatch) -> None:
    """What every job here runs with (the nodes' zygotes pass this process's environment on)."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> List[int]:
    """``pid`` and every process below it (torchrun starts its workers in new sessions)."""
    children: dict = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a node: its launcher, torchrun agent and workers (a machine switched off)."""
    for p in descendants(proc.pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


class Node:
    """One machine: a preloaded process (``conftest.CliZygote``, kept for the module's jobs)
    that forks the node's ``robustedge`` command; switching the node off kills it all."""

    def __init__(self) -> None:
        self.zygote = CliZygote()
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.job: Optional[Future] = None

    def start(self, argv: Sequence[str]) -> None:
        self.zygote.start()
        self.job = self.pool.submit(self.zygote.run, argv, None, 600)

    def running(self) -> bool:
        return self.job is not None and not self.job.done()

    def result(self, timeout: float) -> Tuple[int, str, str]:
        assert self.job is not None
        r = self.job.result(timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    def kill(self) -> None:
        """SIGKILL the node: its launcher, torchrun agent and workers (a machine switched
        off), and the process they were forked from (started again for the next job)."""
        assert self.zygote.proc is not None
        kill_tree(self.zygote.proc)
        if self.job is not None:
            wait([self.job], timeout=60)


NODES = (Node(), Node())


class TwoNodes:
    """``robustedge ARGS --nnodes 2 ...`` started twice, as two nodes (:data:`NODES`); every
    process they started is killed on leaving, whatever happened."""

    def __init__(self, args: Sequence[str], node_args: Sequence[Sequence[str]]) -> None:
        self.args, self.node_args = list(args), node_args
        self.nodes: List[Node] = []

    def __enter__(self) -> TwoNodes:
        for node, extra in zip(NODES, self.node_args):
            node.start([*self.args, "--nnodes", "2", *extra])
            self.nodes.append(node)
            if len(self.nodes) == 1:  # the first node hosts the store: the second joins it
                self.wait_listening(node, endpoint_port(extra))
        return self

    @staticmethod
    def wait_listening(node: Node, port: int, timeout: float = 120) -> None:
        """Until ``port`` listens (the first node's store is up) or ``node``'s job ended."""
        deadline = time.monotonic() + timeout
        while not listening(port) and node.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def results(self, timeout: float = 600) -> List[Tuple[int, str, str]]:
        return [n.result(timeout) for n in self.nodes]

    def __exit__(self, *exc) -> None:
        for n in self.nodes:
            if n.running():
                n.kill()


def endpoint_port(node_args: Sequence[str]) -> int:
    return int(node_args[list(node_args).index("--rdzv-endpoint") + 1].rsplit(":", 1)[1])


def listening(port: int) -> bool:
    """True when a TCP socket on this machine listens on ``port`` (read from /proc/net: no
    connection is made to it)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def c10d(port: int) -> List[List[str]]:
    return [["--rdzv-endpoint", f"127.0.0.1:{port}"]] * 2


def static(port: int) -> List[List[str]]:
    return [["--rdzv-endpoint", f"127.0.0.1:{port}", "--node-rank", str(r)] for r in (0, 1)]


def weights(run: Path):
    return load_file(str(run / "model.safetensors"))


def assert_close_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        # float sums in another order (gloo's all-reduce): 1e-5-level differences
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=5e-5)


def test_torchrun_options_per_layout():
    assert Nodes(2).torchrun_args(["x"]) == ["--standalone", "--nproc-per-node=2"]
    c = Nodes(1, 2, endpoint="10.0.0.1:29400").torchrun_args(["train"])
    assert "--rdzv-backend=c10d" in c and "--rdzv-endpoint=10.0.0.1:29400" in c
    assert c[-1] == Nodes(1, 2, endpoint="h:1").torchrun_args(["train"])[-1]  # id: the argv
    assert "--nnodes=2" in c and "--nproc-per-node=1" in c and c[-1] != "--rdzv-id=job7"
    named = Nodes(1, 2, endpoint="h:1", rdzv_id="job7").torchrun_args(["train"])
    assert named[-1] == "--rdzv-id=job7"  # --rdzv-id names the rendezvous
    s = Nodes(2, 3, node_rank=2, endpoint="[::1]:29400").torchrun_args(["train"])
    assert "--node-rank=2" in s and "--master-addr=::1" in s and "--master-port=29400" in s
    for bad, match in [
        (dict(nnodes=2), "needs --rdzv-endpoint"),
        (dict(nnodes=1, endpoint="h:1"), "--nnodes > 1"),
        (dict(nnodes=2, endpoint="h:99999"), "HOST:PORT"),
        (dict(nnodes=2, endpoint="h:1", node_rank=2), r"0\.\.1"),
        (dict(nnodes=2, endpoint="h:1", node_rank=0, rdzv_id="x"), "leave it out"),
    ]:
        with pytest.raises(ValueError, match=match):
            Nodes(**bad)


def test_a_lost_node_is_one_line():
    """The surviving node's line, read from what torchrun printed (both ways a node is lost)."""
    nodes = Nodes(1, 2, endpoint="127.0.0.1:29632")
    peer = JobLog()
    for line in [
        "[default0]:[rank0]: Traceback (most recent call last):",
        "[default0]:[rank0]: RuntimeError: [/w/gloo/transport/tcp/pair.cc:537] Read error "
        "[127.0.0.1]:46991: Connection reset by peer. This is typically caused by a remote",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
    ]:
        peer.read(line)
    assert peer.failure(nodes, 1) == (
        "2-node x 1-process job failed: rank 0: Read error [127.0.0.1]:46991: Connection "
        "reset by peer (another node stopped first)"
    )
    store = JobLog()
    store.read(
        "torch.distributed.elastic.rendezvous.api.RendezvousConnectionError: The connection "
        "to the C10d store has failed. See inner exception for details."
    )
    assert "lost the rendezvous at 127.0.0.1:29632 (RendezvousConnectionError: The " in (
        store.failure(nodes, 1)
    )


@pytest.mark.slow
def test_two_nodes_train_and_compress_give_the_one_process_weights(
    tmp_path, dist_data, one_process
):
    """The two-node jobs against the one-process runs of the same configs (the training
    reference, :func:`_dist_fixtures.one_process`, is shared with test_ddp.py)."""
    train = ["train", "--data", "npz", "--data-dir", dist_data, *TRAIN, "--adversary", "none"]
    train += ["--epochs", "2", "--no-progress", "--out", str(tmp_path / "nodes")]
    with TwoNodes(train, c10d(free_port())) as job:
        results = job.results()
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert sum(o.count("run folder:") for _, o, _ in results) == 1  # global rank 0 only
    one = json.loads((one_process / "metrics.json").read_text())
    assert_close_weights(tmp_path / "nodes", one_process)
    m = json.loads((tmp_path / "nodes" / "metrics.json").read_text())
    assert (m["world_size"], m["global_batch_size"], m["nodes"]) == (2, 64, 2)
    assert [h["ranks"] for h in m["node_hosts"]] == [[0], [1]]
    assert m["node_hosts"][0]["host"] == socket.gethostname()
    assert one["nodes"] == 1 and "node_hosts" not in one

    compress = ["compress", "--teacher", str(one_process), "--method", "magnitude"]
    compress += ["--sparsity", "0.8", "--epochs", "1", "--finetune-epochs", "1"]
    compress += ["--adversary", "none", "--attack", "fgsm", *TRAIN[2:]]
    with TwoNodes(compress + ["--out", str(tmp_path / "c-nodes")], static(free_port())) as job:
        for rc, _, err in job.results():
            assert rc == 0, err[-3000:]
    r = run_cli(*compress, "--out", str(tmp_path / "c-one"))
    assert r.returncode == 0, r.stderr
    assert_close_weights(tmp_path / "c-nodes", tmp_path / "c-one")
    m = json.loads((tmp_path / "c-nodes" / "metrics.json").read_text())
    assert (m["world_size"], m["nodes"]) == (2, 2)


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["store-host", "other"])
def test_a_dying_node_ends_the_job_and_the_checkpoint_resumes(tmp_path, uninterrupted, victim):
    """Kill one node (SIGKILL: launcher, agent, worker) after the first checkpoint: the other
    ends with one line; the checkpoint, resumed on two nodes, gives the uninterrupted run."""
    args, full = uninterrupted
    out = tmp_path / "run"
    ckpt = out / "checkpoint" / "last.pt"
    with TwoNodes([*args, "--out", str(out)], c10d(free_port())) as job:
        deadline = time.monotonic() + 600
        while not ckpt.exists() and time.monotonic() < deadline:
            assert all(n.running() for n in job.nodes), "a node ended early"
            time.sleep(0.05)
        dead, alive = job.nodes if victim == "store-host" else job.nodes[::-1]
        dead.kill()
        t0 = time.monotonic()
        rc, _, err = alive.result(600)
        took = time.monotonic() - t0
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("error: 2-node x 1-process job failed: "), lines[0]
    assert "lost the rendezvous" in lines[0] or "another node stopped first" in lines[0]
    assert took < 110  # ended by the lost peer, not by the 120 s collective timeout
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= epoch < 3, "the job was not cut mid-way"
    assert not (out / "model.safetensors").exists()
    with TwoNodes([*args, "--out", str(out), "--resume"], c10d(free_port())) as job:
        for rc, _, err in job.results():
            assert rc == 0, err[-3000:]
    a, b = weights(full), weights(out)
    for k in a:
        assert torch.equal(a[k], b[k]), k
