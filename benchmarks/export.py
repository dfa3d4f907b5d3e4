"""Export benchmark: accuracy, transfer (robust) accuracy, file size and host latency per format.

Trains a digits LeNet-5 teacher with PGD inside the benchmark (benchmarks/results/export_teacher,
reused when present), exports it to every format with the parity gate on, and adds any run
folders given with ``--runs`` (e.g. compressed students at 0.9 / 0.95 / 0.99 sparsity).
Latency: batch 1, 1 thread, median (and p90) of ``--reps`` >= 200 timed runs after warm-up;
TFLite formats on the ai_edge_litert interpreter with its default (optimised) kernels, ONNX
formats on onnxruntime CPU, PyTorch eager for reference. Accuracy numbers come from the parity
gate (TFLite: reference kernels).

    .venv/bin/python benchmarks/export.py [--runs RUN ...] [--epochs 15] [--reps 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ensure_trained, hardware, table, write_result  # noqa: E402

MEASURED = Path(__file__).resolve().parent / "measured"
FORMATS = "onnx,onnx-int8,tflite-float32,tflite-int8"


def train_teacher(out: Path, epochs: int) -> Path:
    """A PGD-trained LeNet-5 on digits (eps 0.1), reused when already trained."""
    from robustedge.training.config import TrainConfig

    cfg = TrainConfig(model="lenet5", adversary="pgd", eps=0.1, steps=7, epochs=epochs, lr=2e-3)
    return ensure_trained(out, cfg)


def latency_ms(run_one, x: np.ndarray, reps: int, warmup: int = 20) -> Dict[str, float]:
    for _ in range(warmup):
        run_one(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        run_one(x)
        times.append(time.perf_counter() - t)
    ms = 1e3 * np.array(times)
    return {
        "p50_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "reps": reps,
        "warmup": warmup,
    }


def torch_latency(model: Any, x: np.ndarray, reps: int) -> Dict[str, float]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xt = torch.as_tensor(x)
        with torch.no_grad():
            return latency_ms(model, xt, reps)
    finally:
        torch.set_num_threads(threads)


def bench_run(run: Path, reps: int) -> List[Dict[str, Any]]:
    """Export one run (parity gate on) and time every format."""
    from robustedge.export import ExportConfig, export_run
    from robustedge.export.runners import make_runner
    from robustedge.models import load_model

    report = export_run(run, ExportConfig(formats=FORMATS))
    shape = tuple(report.manifest["input_shape_nchw"])
    x = np.load(report.out / "eval_clean.npz")["x"][:1]
    model, _ = load_model(run)
    first = next(iter(report.artifacts.values()))["parity"]
    torch_row = {
        "run": run.name,
        "format": "pytorch",
        "bytes": (run / "model.safetensors").stat().st_size,
        "clean_acc": first["torch_clean_acc"],
        "transfer_acc": first["torch_transfer_acc"],
        **torch_latency(model.eval(), x, reps),
    }
    rows = [torch_row]
    for fmt, a in report.artifacts.items():
        runner = make_runner(fmt, report.path(fmt), shape, threads=1, reference=False)
        xin = runner.prepare(x)
        rows.append(
            {
                "run": run.name,
                "format": fmt,
                "bytes": a["bytes"],
                "clean_acc": a["parity"]["clean_acc"],
                "transfer_acc": a["parity"]["transfer_acc"],
                "clean_drop_pts": a["parity"]["clean_drop_pts"],
                "transfer_drop_pts": a["parity"]["transfer_drop_pts"],
                **latency_ms(runner.run_one, xin, reps),
            }
        )
    gz = {r["stage"].split(" ")[0]: r["gzip_bytes"] for r in report.ledger["stages"]}
    for r in rows:
        r["gzip_bytes"] = gz.get(r["format"], gz.get("PyTorch"))
    return rows, report


def target_checks(
    rows: List[Dict[str, Any]], ledgers: Dict[str, Any], teacher: str
) -> List[Dict[str, Any]]:
    """The issue's targets: int8 within 0.5 pt clean / 1 pt robust of PyTorch; a structured
    student at least 3x faster than the dense teacher in int8 on this host."""
    from robustedge.export.ledger import STRUCTURED

    by = {(r["run"], r["format"]): r for r in rows}
    out = []
    for run, led in ledgers.items():
        q = by[(run, "tflite-int8")]
        ok = q["clean_drop_pts"] <= 0.5 and q["transfer_drop_pts"] <= 1.0
        out.append(
            {
                "run": run,
                "target": "int8 within 0.5 pt clean, 1 pt robust",
                "met": ok,
                "line": f"{run}: int8 drop clean {q['clean_drop_pts']:.2f} pt, transfer "
                f"{q['transfer_drop_pts']:.2f} pt -> {'met' if ok else 'NOT met'}",
            }
        )
        if led["verdict"] == STRUCTURED and run != teacher:
            speed = by[(teacher, "tflite-int8")]["p50_ms"] / q["p50_ms"]
            out.append(
                {
                    "run": run,
                    "target": "structured int8 >= 3x faster than teacher int8",
                    "speedup": speed,
                    "met": speed >= 3.0,
                    "line": f"{run}: int8 speed-up over the teacher {speed:.2f}x -> "
                    f"{'met' if speed >= 3 else 'NOT met'} (target 3x)",
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--runs",
        nargs="*",
        type=Path,
        default=[],
        help="Extra run folders (students) to export and time.",
    )
    ap.add_argument("--epochs", type=int, default=15, help="Teacher training epochs.")
    ap.add_argument("--reps", type=int, default=300, help="Timed runs per format (>= 200).")
    args = ap.parse_args()
    if args.reps < 200:
        ap.error("--reps must be >= 200")
    hw = hardware()
    teacher = train_teacher(RESULTS / "export_teacher", args.epochs)
    rows, ledgers, attack = [], {}, None
    for run in [teacher, *args.runs]:
        r, report = bench_run(run, args.reps)
        rows += r
        ledgers[run.name] = {"stages": report.ledger["stages"], "verdict": report.ledger["verdict"]}
        attack = report.manifest["transfer_attack"]
    head = ["run", "format", "bytes", "gzip", "clean%", "transfer%", "p50 us", "p90 us"]
    print(
        f"export benchmark on {hw['cores']}-core {hw['machine']} CPU ({hw['cpu']}); "
        f"batch 1, 1 thread, median of {args.reps}; transfer set: {attack}"
    )
    print(
        table(
            head,
            [
                [
                    r["run"],
                    r["format"],
                    r["bytes"],
                    r["gzip_bytes"],
                    round(100 * r["clean_acc"], 2),
                    round(100 * r["transfer_acc"], 2),
                    f"{1e3 * r['p50_ms']:.1f}",
                    f"{1e3 * r['p90_ms']:.1f}",
                ]
                for r in rows
            ],
        )
    )
    checks = target_checks(rows, ledgers, teacher.name)
    for c in checks:
        print(c["line"])
    payload = {
        "benchmark": "export",
        "hardware": hw,
        "transfer_attack": attack,
        "targets": checks,
        "latency": "batch 1, 1 thread, TFLite default kernels / onnxruntime CPU",
        "rows": rows,
        "ledgers": ledgers,
    }
    path = write_result("export", payload)
    MEASURED.mkdir(exist_ok=True)
    (MEASURED / "export.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {path} (copy in {MEASURED / 'export.json'})")


if __name__ == "__main__":
    main()
