"""Streaming: peak RSS of training one epoch from an image folder, streamed vs in memory.

Generates N (default 20,000) random 32x32 RGB PNGs in 10 classes (90 % train, 10 % test) in
a temporary folder, then runs each case in its own child process (``nice -n 5``, one thread,
under ``/usr/bin/time -v``: its peak RSS, user + sys CPU and wall time):

- ``baseline``: imports torch and robustedge and builds the model; loads no data;
- ``streamed-small``: the streamed run below on a second folder of N / 5 images (at the
  default N its test split, 400 images, still fills the 256-image evaluation batches): what
  training and evaluating cost besides the data (activations, libtorch's code pages), so that
  streamed minus streamed-small is what the 5x larger set adds;
- ``streamed-cold``: ``--data imagefolder`` (train_run on the folder): decodes every image once
  into the uint8 cache, then trains one epoch reading each batch from it (and evaluates);
- ``streamed-warm``: the same again, the cache already built;
- ``memory``: the same folder decoded into float32 arrays (``load_image_folder(stream=False)``,
  the path before streaming) and the same epoch.

Every case runs ``--reps`` times (default 2, interleaved); the table shows its highest peak.
Also reported: the float32 size of the data (N x 3 x 32 x 32 x 4 B) and whether each streamed
peak lies below baseline + that size and below the in-memory peak. Writes
benchmarks/measured/streaming.json (hardware, load, threads, date).

    python benchmarks/streaming.py [--n 20000] [--model tiny] [--adversary fgsm] [--reps 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import hardware, loadavg, table  # noqa: E402

MEASURED = Path(__file__).resolve().parent / "measured"
MB = 1e6
CASES = ("baseline", "streamed-small", "streamed-cold", "streamed-warm", "memory")
SIZE, CLASSES = 32, 10


def generate(root: Path, n: int) -> None:
    """``n`` random RGB PNGs, SIZE x SIZE, CLASSES classes, 10 % of each class in test."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % CLASSES
        split = "test" if (i // CLASSES) % 10 == 9 else "train"
        folder = root / split / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        # a class-dependent mean so the epoch learns something; noise on top
        px = rng.integers(0, 128, size=(SIZE, SIZE, 3), dtype=np.uint8) + np.uint8(c * 12)
        Image.fromarray(px).save(folder / f"{i:05d}.png")


def worker(case: str, root: Path, out: Path, model: str, adversary: str) -> None:
    """One case in this process (run by :func:`measure` as a child)."""
    import resource

    import torch

    from robustedge.data import register_dataset
    from robustedge.data.imagefolder import load_image_folder
    from robustedge.models import ModelSpec, build_model
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if case == "baseline":
        build_model(ModelSpec(model, (3, SIZE, SIZE), CLASSES, {}))
        data = ""
    elif case == "memory":
        data = register_dataset(load_image_folder(root, stream=False), "folder-in-memory")
    else:
        data = "imagefolder"
    if case != "baseline":
        cfg = TrainConfig(
            data=data,
            data_dir=str(root),
            model=model,
            adversary=adversary,
            epochs=1,
            steps=1,
            batch_size=128,
            seed=0,
        )
        train_run(cfg, out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"case": case, "peak_rss_self": peak, "seconds": time.perf_counter() - t0}))


def measure(case: str, root: Path, a: argparse.Namespace) -> dict:
    """Run ``case`` in a child under ``nice -n 5`` and ``/usr/bin/time -v``; its record."""
    if case == "streamed-small":
        root = root.parent / "small"
    if case in ("streamed-small", "streamed-cold"):  # cold: no decoded cache yet
        shutil.rmtree(root / ".robustedge-cache", ignore_errors=True)
    out = root.parent / f"run-{case}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--worker", case, "--root", str(root), "--out", str(out)]
    cmd += ["--model", a.model, "--adversary", a.adversary]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    p = subprocess.run(
        ["nice", "-n", "5", "/usr/bin/time", "-v", *cmd],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{case} failed:\n{p.stderr[-3000:]}")
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    times = dict(re.findall(r"^\s*(.+?): (.+)$", p.stderr, re.M))
    rec.update(
        peak_rss=int(times["Maximum resident set size (kbytes)"]) * 1024,
        cpu_s=float(times["User time (seconds)"]) + float(times["System time (seconds)"]),
        wall_s=wall,
    )
    return rec


def summary(runs: list) -> dict:
    """A case over its repetitions: the highest peak RSS (the one a memory limit must allow),
    every run's peak, and the median CPU and wall seconds."""
    return {
        "peak_rss": max(r["peak_rss"] for r in runs),
        "peak_rss_runs": [r["peak_rss"] for r in runs],
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "runs": runs,
    }


def headline(recs: dict) -> dict:
    """The numbers a results page shows (MB = 10^6 B): each case's highest peak RSS, and what
    the N-image set adds over the N/5 one, streamed and in memory."""
    out = {
        f"{c.replace('-', '_')}_peak_rss_mb": round(r["peak_rss"] / MB, 1) for c, r in recs.items()
    }
    small = recs["streamed-small"]["peak_rss"]
    for c in ("streamed-warm", "memory"):
        out[f"{c.replace('-', '_')}_added_over_small_mb"] = round(
            (recs[c]["peak_rss"] - small) / MB, 1
        )
    return out


def report(recs: dict, n: int, a: argparse.Namespace, extra: dict) -> dict:
    """Print the table and return the JSON payload."""
    data_mb = n * 3 * SIZE * SIZE * 4 / MB
    base = recs["baseline"]["peak_rss"] / MB
    rows = [
        [
            c,
            f"{r['peak_rss'] / MB:.1f}",
            f"{r['peak_rss'] / MB - base:+.1f}",
            r["cpu_s"],
            r["wall_s"],
        ]
        for c, r in recs.items()
    ]
    print(
        table(["case", "max peak RSS MB", "vs baseline MB", "median cpu s", "median wall s"], rows)
    )
    mem = recs["memory"]["peak_rss"] / MB
    checks = {}
    for c in ("streamed-cold", "streamed-warm"):
        s = recs[c]["peak_rss"] / MB
        checks[c] = {"below_baseline_plus_float32": s < base + data_mb, "below_memory": s < mem}
    print(f"data as float32: {n} x 3 x {SIZE} x {SIZE} x 4 B = {data_mb:.1f} MB")
    small = recs["streamed-small"]["peak_rss"] / MB
    grows = {c: recs[c]["peak_rss"] / MB - small for c in ("streamed-warm", "memory")}
    print(
        f"{n // 5} -> {n} images adds: streamed {grows['streamed-warm']:+.1f} MB, "
        f"in memory {grows['memory']:+.1f} MB"
    )
    for c, v in checks.items():
        print(
            f"{c}: below baseline + float32 data: {v['below_baseline_plus_float32']}, "
            f"below in-memory: {v['below_memory']}"
        )
    return {
        "what": "peak RSS (/usr/bin/time -v, each case its own child process) of one training "
        f"epoch from a folder of {n} random {SIZE}x{SIZE} RGB PNGs ({CLASSES} classes, 90/10 "
        "train/test), streamed from the uint8 cache vs decoded into float32 in memory",
        "settings": {**vars(a), "epochs": 1, "batch_size": 128, "steps": 1},
        "images": n,
        "float32_data_mb": data_mb,
        **headline(recs),
        "cases": recs,
        "checks": checks,
        "small_images": n // 5,
        **extra,
        "hardware": hardware(),
        "omp_num_threads": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--adversary", default="fgsm")
    ap.add_argument("--reps", type=int, default=2, help="runs of every case (highest peak kept)")
    ap.add_argument("--worker", choices=CASES)
    ap.add_argument("--root", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.root, a.out, a.model, a.adversary)
    load_before = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        t0 = time.perf_counter()
        generate(root, a.n)
        generate(Path(tmp) / "small", a.n // 5)
        gen_s = time.perf_counter() - t0
        print(f"generated {a.n} PNGs in {gen_s:.0f} s")
        runs: dict = {c: [] for c in CASES}
        for rep in range(a.reps):
            for case in CASES:
                runs[case].append(measure(case, root, a))
                r = runs[case][-1]
                print(f"rep {rep + 1} {case}: {r['peak_rss'] / MB:.1f} MB, {r['wall_s']:.0f} s")
        recs = {c: summary(rs) for c, rs in runs.items()}
        cache = sum(f.stat().st_size for f in (root / ".robustedge-cache").rglob("*.u8"))
    settings = {k: v for k, v in vars(a).items() if k not in ("worker", "root", "out")}
    a = argparse.Namespace(**settings)
    extra = {"generate_s": gen_s, "cache_bytes": cache, "loadavg_before": load_before}
    payload = report(recs, a.n, a, {**extra, "loadavg_after": loadavg()})
    MEASURED.mkdir(exist_ok=True)
    path = MEASURED / "streaming.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
