"""Scale-out: 2-process DDP vs 1 process for PGD-AT, and a 6-student recipe on Ray vs serial.

1. DDP: PGD-AT (Linf eps 8/255, PGD-K with random start) of ResNet-8 on ``synthetic32``
   (3x32x32), global batch 64, launched with ``torchrun --standalone --nproc-per-node N`` for
   N = 1 and 2 (gloo, 1 thread per process). Throughput = training samples / wall time of the
   last epoch on rank 0 (the first epoch is warm-up). Target: 2 processes >= 1.6x.
2. Ray: a recipe with 6 students (prox, PGD-AT, 3 sparsities x 2 seeds) of a LeNet-5 teacher
   on digits, run from scratch by ``robustedge run`` with the serial executor and with
   ``--executor ray --ray-cpus 2``; wall time of the whole command (Ray start-up included).
   Target: Ray <= 0.65x of serial.
3. Nodes (``--part nodes``): the DDP measurement of 1 with three layouts on this machine:
   1 node x 1 process, 1 node x 2 processes (``--standalone``) and 2 nodes x 1 process (two
   torchrun agents on 127.0.0.1 meeting at one c10d rendezvous, the options robustedge's
   ``--nnodes 2 --rdzv-endpoint`` passes). Same cores, so 2x1 / 1x2 is the rendezvous and
   transport overhead of a second node. Target: >= 0.9.
4. Ray cluster (``--part cluster``): the sweep of 2 (``--ray-epochs`` pruning epochs per
   student) serial vs on a two-node Ray cluster on loopback (``ray start --head`` and a second
   ``ray start`` process, 1 CPU each, token auth) joined with ``--address 127.0.0.1:PORT``;
   wall time of the ``robustedge run`` command (the cluster's own start not included).

The machine's load average (from /proc/loadavg) is written next to every measurement: on a
shared 2-core VM other processes take cores away, and the ratios mean little when the load
is above the core count.

Usage: python benchmarks/scale.py [--part ddp|ray|nodes|cluster|all] [--samples 512]
       [--steps 7] [--epochs 2] [--repeats 2] [--ray-epochs 30]
Writes benchmarks/measured/scale.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import hardware, loadavg, table  # noqa: E402

HERE = Path(__file__).resolve().parent
MEASURED = HERE / "measured" / "scale.json"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------ DDP worker
def ddp_worker(args: argparse.Namespace) -> None:
    """Runs under torchrun: PGD-AT epochs through robustedge's own fit (DistributedSampler
    shards, gradient all-reduce); rank 0 writes the epoch times."""
    import torch

    from robustedge import distributed
    from robustedge.data import load_dataset
    from robustedge.models import ModelSpec, build_model
    from robustedge.training import build_adversary, epoch_batches, fit, make_optimizer
    from robustedge.training.loop import FitHooks

    torch.set_num_threads(1)
    with distributed.session(torch.device("cpu")) as world:
        data = load_dataset(args.data)
        x = torch.as_tensor(data.x_train[: args.samples])
        y = torch.as_tensor(data.y_train[: args.samples])
        torch.manual_seed(0)
        model = build_model(ModelSpec(args.model, data.input_shape, data.num_classes))
        opt = make_optimizer(model.parameters(), "sgd", 0.05)
        adv = build_adversary("pgd", eps=8 / 255, steps=args.steps)
        adv.seed(0, world.rank)
        times: List[float] = []
        t = [time.perf_counter()]

        def epoch_end(epoch: int, record: Dict[str, float]) -> None:
            now = time.perf_counter()
            times.append(now - t[0])
            t[0] = now

        batches = epoch_batches(x, y, args.batch, 0)
        fit(model, batches, adv, opt, args.epochs, hooks=FitHooks(on_epoch_end=epoch_end))
        if world.main:
            Path(args.result).write_text(
                json.dumps({"epoch_seconds": times, "world_size": world.size})
            )


def _worker_args(args: argparse.Namespace, result: Path) -> List[str]:
    cmd = [str(Path(__file__).resolve()), "--ddp-worker"]
    cmd += ["--model", args.model, "--data", args.data, "--samples", str(args.samples)]
    cmd += ["--steps", str(args.steps), "--epochs", str(args.epochs)]
    return cmd + ["--batch", str(args.batch), "--result", str(result)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_layout(args: argparse.Namespace, nnodes: int, nproc: int) -> Dict[str, Any]:
    """One DDP run of ``nnodes`` torchrun agents x ``nproc`` processes on this machine."""
    from robustedge.commands.launch import Nodes

    endpoint = f"127.0.0.1:{free_port()}" if nnodes > 1 else None
    nodes = Nodes(nproc, nnodes, endpoint=endpoint, rdzv_id="bench" if endpoint else None)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "r.json"
        torchrun = [sys.executable, "-m", "torch.distributed.run", *nodes.torchrun_args([])]
        cmd = torchrun + _worker_args(args, result)
        before = loadavg()
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            for _ in range(nnodes)
        ]
        errs = [p.communicate()[1] for p in procs]
        wall = time.perf_counter() - t0
        if any(p.returncode for p in procs):
            raise SystemExit(f"{nodes.describe()} run failed: {errs[0][-2000:]}")
        r = json.loads(result.read_text())
    return {
        "nodes": nnodes,
        "processes_per_node": nproc,
        "processes": nnodes * nproc,
        "epoch_seconds": r["epoch_seconds"],
        "samples_per_s": args.samples / r["epoch_seconds"][-1],
        "command_wall_s": wall,
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }


def ddp_setup(args: argparse.Namespace) -> Dict[str, Any]:
    return {
        "model": args.model,
        "data": args.data,
        "train_samples": args.samples,
        "adversary": f"pgd-{args.steps} eps 8/255 (random start)",
        "global_batch": args.batch,
        "epochs": args.epochs,
        "backend": "gloo",
        "threads_per_process": 1,
    }


def measure_ddp(args: argparse.Namespace) -> Dict[str, Any]:
    rows = {}
    for nproc in (1, 2):
        rows[nproc] = run_layout(args, 1, nproc)
        print(f"ddp nproc={nproc}: {rows[nproc]['samples_per_s']:.2f} samples/s", flush=True)
    ratio = rows[2]["samples_per_s"] / rows[1]["samples_per_s"]
    return {
        "setup": ddp_setup(args),
        "runs": [rows[1], rows[2]],
        "speedup_2_vs_1": ratio,
        "target": 1.6,
        "met": ratio >= 1.6,
    }


def measure_nodes(args: argparse.Namespace) -> Dict[str, Any]:
    """1x1, 1x2 and 2x1 (nodes x processes), interleaved ``--repeats`` times."""
    runs: List[Dict[str, Any]] = []
    for _ in range(args.repeats):
        for nnodes, nproc in ((1, 1), (1, 2), (2, 1)):
            row = run_layout(args, nnodes, nproc)
            runs.append(row)
            print(f"{nnodes} node x {nproc} proc: {row['samples_per_s']:.2f} samples/s", flush=True)

    def best(n: int, p: int) -> float:
        return max(
            r["samples_per_s"] for r in runs if (r["nodes"], r["processes_per_node"]) == (n, p)
        )

    ratio = best(2, 1) / best(1, 2)
    return {
        "setup": {**ddp_setup(args), "rendezvous": "c10d on 127.0.0.1", "repeats": args.repeats},
        "runs": runs,
        "best_samples_per_s": {"1x1": best(1, 1), "1x2": best(1, 2), "2x1": best(2, 1)},
        "two_nodes_vs_one_node_2proc": ratio,
        "two_nodes_vs_one_proc": best(2, 1) / best(1, 1),
        "target": 0.9,
        "met": ratio >= 0.9,
    }


# ------------------------------------------------------------------------------ Ray sweep
RECIPE = """\
name: scale-sweep
seed: 0
data: {{name: digits}}
teacher:
  load: {teacher}
evaluate:
  attacks: []
compress:
{students}"""
STUDENT = """\
  - name: prox-seed{seed}
    method: prox
    adversary: pgd
    eps: 0.1
    steps: {steps}
    seed: {seed}
    sparsity: [0.8, 0.9, 0.95]
    epochs: {epochs}
    finetune_epochs: {finetune}
"""


def sweep_recipe(args: argparse.Namespace) -> Path:
    """The 6-student sweep (written under benchmarks/results/scale)."""
    from _common import ensure_trained
    from robustedge.training.config import TrainConfig

    work = HERE / "results" / "scale"
    teacher = ensure_trained(
        work / "teacher", TrainConfig(model="lenet5", adversary="pgd", eps=0.1, epochs=10)
    )
    students = "".join(
        STUDENT.format(seed=s, steps=3, epochs=args.ray_epochs, finetune=2) for s in (0, 1)
    )
    recipe = work / "sweep.yaml"
    recipe.write_text(RECIPE.format(teacher=teacher, students=students))
    return recipe


def timed_run(recipe: Path, name: str, extra: List[str], env: Optional[dict] = None) -> dict:
    """``robustedge run RECIPE`` from scratch: its wall time and each student's seconds."""
    out = recipe.parent / f"out-{name}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    before = loadavg()
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "robustedge.cli", "run", str(recipe), "--out", str(out)] + extra,
        env=env or ENV,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name} run failed: {r.stderr.strip()}")
    stages = json.loads((out / "summary.json").read_text())["stages"]
    done = sum(1 for s in stages if s["status"] == "done")
    students = [round(s["seconds"], 1) for s in stages if s["id"].startswith("student-")]
    print(f"recipe {name}: {wall:.1f} s", flush=True)
    return {
        "executor": name,
        "wall_s": wall,
        "stages_run": done,
        "student_seconds": students,  # each stage's own run time (Ray: not queue time)
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }


def sweep_setup(args: argparse.Namespace) -> Dict[str, Any]:
    return {
        "students": 6,
        "student": f"prox, PGD-3 AT eps 0.1, {args.ray_epochs} + 2 epochs, LeNet-5, digits",
    }


def measure_ray(args: argparse.Namespace) -> Dict[str, Any]:
    recipe = sweep_recipe(args)
    serial = timed_run(recipe, "serial", [])
    ray = timed_run(recipe, "ray", ["--executor", "ray", "--ray-cpus", "2"])
    ratio = ray["wall_s"] / serial["wall_s"]
    return {
        "setup": {**sweep_setup(args), "ray_cpus": 2},
        "runs": [serial, ray],
        "ray_vs_serial": ratio,
        "target": 0.65,
        "met": ratio <= 0.65,
    }


@contextlib.contextmanager
def loopback_cluster(cpus_per_node: int = 1) -> Iterator[Tuple[str, dict]]:
    """A two-node Ray cluster on this machine: (its address, the environment that joins it)."""
    tmp = Path(tempfile.mkdtemp(prefix="rcb", dir="/tmp"))  # short: Ray's socket paths
    port = free_port()
    env = {**ENV, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    ray = str(Path(sys.executable).with_name("ray"))
    procs = []
    try:
        for head in (True, False):
            cmd = [ray, "start", "--block", f"--num-cpus={cpus_per_node}", "--disable-usage-stats"]
            cmd += ["--object-store-memory=100000000"]
            for p in ("node-manager", "object-manager", "dashboard-agent-listen",
                      "dashboard-agent-grpc", "metrics-export", "runtime-env-agent"):  # fmt: skip
                cmd.append(f"--{p}-port={free_port()}")
            if head:
                cmd += ["--head", f"--port={port}", "--include-dashboard=false"]
                cmd += [f"--ray-client-server-port={free_port()}", f"--temp-dir={tmp}"]
            else:
                cmd += [f"--address=127.0.0.1:{port}"]
            procs.append(
                subprocess.Popen(
                    cmd,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        wait = (
            "import ray, time\n"
            f"ray.init(address='127.0.0.1:{port}', log_to_driver=False)\n"
            "while sum(n['Alive'] for n in ray.nodes()) < 2: time.sleep(0.5)\n"
        )
        subprocess.run(
            [sys.executable, "-c", wait], env=env, check=True, timeout=300, capture_output=True
        )
        yield f"127.0.0.1:{port}", env
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def measure_cluster(args: argparse.Namespace) -> Dict[str, Any]:
    recipe = sweep_recipe(args)
    serial = timed_run(recipe, "serial", [])
    with loopback_cluster() as (address, env):
        ray = timed_run(recipe, "ray-cluster", ["--executor", "ray", "--address", address], env)
    ratio = ray["wall_s"] / serial["wall_s"]
    return {
        "setup": {**sweep_setup(args), "cluster": "2 Ray nodes on 127.0.0.1, 1 CPU each"},
        "runs": [serial, ray],
        "cluster_vs_serial": ratio,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--part", default="all", choices=["ddp", "ray", "nodes", "cluster", "all"])
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--data", default="synthetic32")
    ap.add_argument("--samples", type=int, default=512, help="training samples per epoch")
    ap.add_argument("--steps", type=int, default=7, help="PGD steps of the AT")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ray-epochs", type=int, default=30, help="pruning epochs per student")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the nodes part")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ddp_worker:
        ddp_worker(args)
        return
    payload: Dict[str, Any] = {}
    if MEASURED.is_file():
        payload = json.loads(MEASURED.read_text())
    parts = ("ddp", "ray", "nodes", "cluster")
    earlier = {k: payload[k] for k in ("date", *parts) if k in payload}
    if earlier:  # keep every earlier measurement: the load differs from run to run
        payload["earlier"] = [*payload.get("earlier", []), earlier]
    payload["hardware"] = {**hardware(), "note": "shared 2-core VM; see loadavg per run"}
    payload["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.part in ("ddp", "all"):
        payload["ddp"] = measure_ddp(args)
    if args.part in ("ray", "all"):
        payload["ray"] = measure_ray(args)
    if args.part in ("nodes", "all"):
        payload["nodes"] = measure_nodes(args)
    if args.part in ("cluster", "all"):
        payload["cluster"] = measure_cluster(args)
    MEASURED.parent.mkdir(parents=True, exist_ok=True)
    tmp = MEASURED.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, MEASURED)
    rows = []
    if "ddp" in payload:
        d = payload["ddp"]
        for r in d["runs"]:
            rows.append(
                [
                    f"DDP {r['processes']} proc",
                    f"{r['samples_per_s']:.2f} samples/s",
                    f"{r['loadavg_before'][0]:.1f}",
                ]
            )
        rows.append(["DDP 2 vs 1", f"{d['speedup_2_vs_1']:.2f}x (target >= 1.6x)", ""])
    if "ray" in payload:
        d = payload["ray"]
        for r in d["runs"]:
            rows.append(
                [f"recipe {r['executor']}", f"{r['wall_s']:.1f} s", f"{r['loadavg_before'][0]:.1f}"]
            )
        rows.append(["Ray vs serial", f"{d['ray_vs_serial']:.2f}x (target <= 0.65x)", ""])
    rows += nodes_rows(payload)
    print(table(["measurement", "result", "load (1 min)"], rows))


def nodes_rows(payload: Dict[str, Any]) -> List[List[str]]:
    """The table's rows of the nodes and cluster parts."""
    rows = []
    if "nodes" in payload:
        d = payload["nodes"]
        for layout, v in d["best_samples_per_s"].items():
            rows.append([f"DDP {layout} (nodes x proc)", f"{v:.2f} samples/s (best)", ""])
        ratio = d["two_nodes_vs_one_node_2proc"]
        rows.append(["DDP 2x1 vs 1x2", f"{ratio:.2f}x (target >= 0.9x)", ""])
    if "cluster" in payload:
        d = payload["cluster"]
        for r in d["runs"]:
            load = f"{r['loadavg_before'][0]:.1f}"
            rows.append([f"recipe {r['executor']}", f"{r['wall_s']:.1f} s", load])
        rows.append(["Ray cluster vs serial", f"{d['cluster_vs_serial']:.2f}x", ""])
    return rows


if __name__ == "__main__":
    main()
