"""The API adds no cost: the same compress through `robustedge compress` (click, in this
process) and through `robustedge.api.compress`, same teacher and seed, run alternately.

Records each wall time, and whether every student's weights and masks are bit-identical.
Usage: python benchmarks/api_overhead.py [--reps 3] [--epochs 1] [--sparsity 0.5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ensure_trained, hardware, loadavg, table  # noqa: E402
from robustedge import api  # noqa: E402
from robustedge.cli import main as cli_main  # noqa: E402
from robustedge.training.config import TrainConfig  # noqa: E402

MEASURED = Path(__file__).resolve().parent / "measured"


def digest(run: Path) -> str:
    h = hashlib.sha256()
    for name in ("model.safetensors", "masks.safetensors"):
        h.update((run / name).read_bytes())
    return h.hexdigest()


def one(how: str, teacher: Path, out: Path, a: argparse.Namespace) -> float:
    opts = {"sparsity": a.sparsity, "epochs": a.epochs, "seed": 0}
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if how == "cli":
        flags = [f"--{k}={v}" for k, v in opts.items()]
        cli_main(["compress", "--teacher", str(teacher), *flags, "--out", str(out)])
    else:
        api.compress(teacher=str(teacher), out=out, **opts)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--sparsity", type=float, default=0.5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    load_before = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teacher = ensure_trained(root / "teacher", TrainConfig(epochs=2, steps=3, seed=0))
        times = {"cli": [], "api": []}
        digests = set()
        for rep in range(a.reps):
            for how in ("cli", "api") if rep % 2 == 0 else ("api", "cli"):
                out = root / f"{how}-{rep}"
                times[how].append(one(how, teacher, out, a))
                digests.add(digest(out))
    rows = [
        [h, *(f"{t:.2f}" for t in ts), f"{statistics.median(ts):.2f}"] for h, ts in times.items()
    ]
    print(table(["path", *(f"rep {i + 1} s" for i in range(a.reps)), "median s"], rows))
    print(f"students bit-identical across all runs: {len(digests) == 1}")
    path = MEASURED / "api_overhead.json"
    path.write_text(
        json.dumps(
            {
                "what": "robustedge compress (in-process click) vs robustedge.api.compress, same "
                "teacher (lenet5 on digits, 2 epochs PGD-3) and seed; lenet5 student, prox method "
                "defaults",
                "settings": vars(a),
                "seconds": times,
                "median_s": {h: statistics.median(ts) for h, ts in times.items()},
                "bit_identical": len(digests) == 1,
                "hardware": hardware(),
                "loadavg_before": load_before,
                "loadavg_after": loadavg(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
