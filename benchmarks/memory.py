"""Memory benchmark: peak training memory of prox vs ADMM (and HYDRA) on a VGG-16-size model.

Each method runs in a fresh subprocess (so ``ru_maxrss`` is its own) on random 3x32x32 inputs
for a couple of optimizer steps of its pruning phase, with the same adversary, optimizer
(Adam) and no teacher (KD off) so that only the method's own state differs. Reported per
method: tensor bytes of parameters, gradients, optimizer state and method state (prox: none;
ADMM: Z and U, 2x the prunable weights; HYDRA: one score per weight), and the process's peak
RSS. A "prox+KD" row adds the teacher (inference only) that distillation needs.

    .venv/bin/python benchmarks/memory.py [--steps 2] [--batch 8] [--width 1.0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import hardware, table, write_result  # noqa: E402

MB = 1024 * 1024


def worker(method: str, steps: int, batch: int, width: float, kd: bool) -> dict:
    """One method's pruning phase on VGG-16; returns its memory ledger."""
    import copy

    import torch

    from robustedge.compress import CompressConfig, PruneContext, make_kd_task_loss
    from robustedge.compress.common import PRUNERS, peak_rss_bytes
    from robustedge.compress.targets import prunable_params
    from robustedge.models import ModelSpec, build_model
    from robustedge.training.adversaries import build_adversary

    torch.manual_seed(0)
    spec = ModelSpec("vgg", (3, 32, 32), 10, {"depth": 16, "width": width})
    model = build_model(spec)
    teacher = copy.deepcopy(model).eval() if kd else None
    rss_model = peak_rss_bytes()
    x, y = torch.rand(steps * batch, 3, 32, 32), torch.randint(0, 10, (steps * batch,))
    cfg = CompressConfig(
        teacher="-",
        method=method,
        sparsity=0.9,
        adversary="fgsm",
        eps=0.03,
        epochs=1,
        kd_alpha=0.5 if kd else 0.0,
    )
    ctx = PruneContext(
        model=model,
        cfg=cfg,
        steps_per_epoch=steps,
        input_shape=spec.input_shape,
        batches=lambda e: ((x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)),
        adversary=build_adversary("fgsm", 0.03, 1),
        task_loss=make_kd_task_loss(teacher, cfg.kd_alpha, cfg.kd_temp),
        params=prunable_params(model),
    )
    t0 = time.perf_counter()
    PRUNERS.get(method)(ctx)
    report = ctx.ledger.report()
    prunable = sum(p.numel() for p in prunable_params(model).values())
    return {
        "method": method + ("+KD" if kd else ""),
        "params": sum(p.numel() for p in model.parameters()),
        "prunable": prunable,
        "phase": report["phases"],
        "rss_after_model_bytes": rss_model,
        "rss_peak_bytes": report["rss_peak_bytes"],
        "teacher_bytes": sum(p.numel() * 4 for p in teacher.parameters()) if kd else 0,
        "seconds": time.perf_counter() - t0,
    }


def run(args) -> dict:
    rows, results = [], []
    for method, kd in (("prox", False), ("admm", False), ("hydra", False), ("prox", True)):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            method,
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--width",
            str(args.width),
        ] + (["--kd"] if kd else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        (phase,) = r["phase"].values()
        w = r["prunable"] * 4
        rows.append(
            [
                r["method"],
                f"{r['params'] / 1e6:.2f}M",
                phase["params"] / MB,
                phase["optimizer"] / MB,
                phase["method_state"] / MB,
                f"{phase['method_state'] / w:.2f}x",
                r["teacher_bytes"] / MB,
                phase["total"] / MB + r["teacher_bytes"] / MB,
                r["rss_peak_bytes"] / MB,
            ]
        )
    headers = [
        "method",
        "params",
        "weights MB",
        "optim MB",
        "method state MB",
        "state / prunable",
        "teacher MB",
        "tensors MB",
        "peak RSS MB",
    ]
    print(
        f"VGG-16 (3x32x32, width {args.width}), batch {args.batch}, {args.steps} steps, "
        f"Adam, FGSM-AT; host: {hardware()['cpu']} ({hardware()['cores']} cores)"
    )
    print(table(headers, rows))
    return {
        "benchmark": "memory",
        "hardware": hardware(),
        "settings": vars(args),
        "headers": headers,
        "rows": rows,
        "results": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--kd", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch, args.width, args.kd)))
        return
    del args.worker, args.kd
    payload = run(args)
    path = write_result("memory", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
