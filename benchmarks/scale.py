"""Scale-out: 2-process DDP vs 1 process for PGD-AT, and a 6-student recipe on Ray vs serial.

1. DDP: PGD-AT (Linf eps 8/255, PGD-K with random start) of ResNet-8 on ``synthetic32``
   (3x32x32), global batch 64, launched with ``torchrun --standalone --nproc-per-node N`` for
   N = 1 and 2 (gloo, 1 thread per process). Throughput = training samples / wall time of the
   last epoch on rank 0 (the first epoch is warm-up). Target: 2 processes >= 1.6x.
2. Ray: a recipe with 6 students (prox, PGD-AT, 3 sparsities x 2 seeds) of a LeNet-5 teacher
   on digits, run from scratch by ``robustedge run`` with the serial executor and with
   ``--executor ray --ray-cpus 2``; wall time of the whole command (Ray start-up included).
   Target: Ray <= 0.65x of serial.

The machine's load average (from /proc/loadavg) is written next to every measurement: on a
shared 2-core VM other processes take cores away, and the ratios mean little when the load
is above the core count.

Usage: python benchmarks/scale.py [--part ddp|ray|all] [--samples 512] [--steps 7] [--epochs 2]
Writes benchmarks/measured/scale.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

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


def measure_ddp(args: argparse.Namespace) -> Dict[str, Any]:
    rows = {}
    for nproc in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "r.json"
            before = loadavg()
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            cmd += [f"--nproc-per-node={nproc}", str(Path(__file__).resolve()), "--ddp-worker"]
            cmd += ["--model", args.model, "--data", args.data, "--samples", str(args.samples)]
            cmd += ["--steps", str(args.steps), "--epochs", str(args.epochs)]
            cmd += ["--batch", str(args.batch), "--result", str(result)]
            subprocess.run(cmd, check=True, env=ENV, capture_output=True)
            wall = time.perf_counter() - t0
            r = json.loads(result.read_text())
        last = r["epoch_seconds"][-1]
        rows[nproc] = {
            "processes": nproc,
            "epoch_seconds": r["epoch_seconds"],
            "samples_per_s": args.samples / last,
            "command_wall_s": wall,
            "loadavg_before": before,
            "loadavg_after": loadavg(),
        }
        print(f"ddp nproc={nproc}: {rows[nproc]['samples_per_s']:.2f} samples/s", flush=True)
    ratio = rows[2]["samples_per_s"] / rows[1]["samples_per_s"]
    return {
        "setup": {
            "model": args.model,
            "data": args.data,
            "train_samples": args.samples,
            "adversary": f"pgd-{args.steps} eps 8/255 (random start)",
            "global_batch": args.batch,
            "epochs": args.epochs,
            "backend": "gloo",
            "threads_per_process": 1,
        },
        "runs": [rows[1], rows[2]],
        "speedup_2_vs_1": ratio,
        "target": 1.6,
        "met": ratio >= 1.6,
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


def measure_ray(args: argparse.Namespace) -> Dict[str, Any]:
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
    rows = {}
    for name, extra in (("serial", []), ("ray", ["--executor", "ray", "--ray-cpus", "2"])):
        out = work / f"out-{name}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        before = loadavg()
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "robustedge.cli", "run", str(recipe), "--out", str(out)] + extra,
            env=ENV,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{name} run failed: {r.stderr.strip()}")
        stages = json.loads((out / "summary.json").read_text())["stages"]
        done = sum(1 for s in stages if s["status"] == "done")
        students = [round(s["seconds"], 1) for s in stages if s["id"].startswith("student-")]
        rows[name] = {
            "executor": name,
            "wall_s": wall,
            "stages_run": done,
            "student_seconds": students,  # each stage's own run time (Ray: not queue time)
            "loadavg_before": before,
            "loadavg_after": loadavg(),
        }
        print(f"recipe {name}: {wall:.1f} s", flush=True)
    ratio = rows["ray"]["wall_s"] / rows["serial"]["wall_s"]
    return {
        "setup": {
            "students": 6,
            "student": f"prox, PGD-3 AT eps 0.1, {args.ray_epochs} + 2 epochs, LeNet-5, digits",
            "ray_cpus": 2,
        },
        "runs": [rows["serial"], rows["ray"]],
        "ray_vs_serial": ratio,
        "target": 0.65,
        "met": ratio <= 0.65,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--part", default="all", choices=["ddp", "ray", "all"])
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--data", default="synthetic32")
    ap.add_argument("--samples", type=int, default=512, help="training samples per epoch")
    ap.add_argument("--steps", type=int, default=7, help="PGD steps of the AT")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ray-epochs", type=int, default=30, help="pruning epochs per student")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ddp_worker:
        ddp_worker(args)
        return
    payload: Dict[str, Any] = {}
    if MEASURED.is_file():
        payload = json.loads(MEASURED.read_text())
    earlier = {k: payload[k] for k in ("date", "ddp", "ray") if k in payload}
    if earlier:  # keep every earlier measurement: the load differs from run to run
        payload["earlier"] = [*payload.get("earlier", []), earlier]
    payload["hardware"] = {**hardware(), "note": "shared 2-core VM; see loadavg per run"}
    payload["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.part in ("ddp", "all"):
        payload["ddp"] = measure_ddp(args)
    if args.part in ("ray", "all"):
        payload["ray"] = measure_ray(args)
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
    print(table(["measurement", "result", "load (1 min)"], rows))


if __name__ == "__main__":
    main()
