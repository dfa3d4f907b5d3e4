"""The CI smoke test's cost and the regression gate's noise (issue 23), on this machine.

1. Wall time of the CI smoke for one bundle: restore the qemu-aarch64 userland from a cache
   (a copy of the built tree into a fresh ROBUSTEDGE_CACHE, what a CI cache restore does),
   bench the bundle on qemu-aarch64 with reference kernels and the transfer set, and
   `robustedge check` with gates and a baseline. Warm: the cache holds the userland. Cold
   (``--cold``): setup-qemu builds it (Debian + PyPI downloads) first.
2. Noise: the same student benched ``--reruns`` times with different Square seeds, each checked
   against the seed-0 run as the baseline: the regression gate must never fire.
3. Power: a student measured below the first on the board's robust accuracy (worst case per
   image over every test image): the gate must fire (its drop and p-value recorded).

Needs root, qemu-user-static and a built userland (`robustedge device setup-qemu`). Models: a
tiny FGSM-trained CNN on digits and prox students, trained here (seconds each). Prints a table;
writes benchmarks/measured/ci_smoke.json with the hardware and load.

    python benchmarks/ci_smoke.py [--reruns 10] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import hardware, loadavg, table  # noqa: E402

MEASURED = Path(__file__).resolve().parent / "measured"
BENCH = ["--reference-kernels", "--runs", "200", "--square-queries", "30", "--square-n", "all"]
GATES = ["--expect", "clean>=0.85", "--expect", "parity=pass"]


def cli(*args: str, env: Dict[str, str] | None = None, ok=(0,)) -> subprocess.CompletedProcess:
    """`robustedge ARGS` in a fresh interpreter, as CI runs it."""
    r = subprocess.run(
        [sys.executable, "-m", "robustedge.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if r.returncode not in ok:
        raise SystemExit(f"robustedge {' '.join(args)} -> {r.returncode}: {r.stderr[-2000:]}")
    return r


def models(work: Path) -> Dict[str, Path]:
    """Teacher + students, each exported and bundled; every student's run folder is named
    ``student`` (as a repository's model keeps its name from merge request to merge request)."""
    teacher = work / "teacher"
    if not (teacher / "metrics.json").is_file():
        cli(
            "train",
            "--model",
            "tiny",
            "--adversary",
            "fgsm",
            "--eps",
            "0.1",
            "--epochs",
            "35",
            "--lr",
            "0.01",
            "--out",
            str(teacher),
        )
    out = {}
    for name, sp, adv in (
        ("good", "0.5", "fgsm"),
        ("s0.8", "0.8", "fgsm"),
        ("s0.7", "0.7", "fgsm"),
    ):
        run = work / name / "student"
        if not (run / "metrics.json").is_file():
            cli(
                "compress",
                "--teacher",
                str(teacher),
                "--method",
                "prox",
                "--sparsity",
                sp,
                "--adversary",
                adv,
                "--eps",
                "0.1",
                "--epochs",
                "3",
                "--finetune-epochs",
                "3",
                "--out",
                str(run),
            )
        if not (work / name / "bundle" / "manifest.json").is_file():
            cli(
                "export",
                str(run),
                "--formats",
                "onnx,tflite-int8",
                "--clean-margin",
                "5",
                "--robust-margin",
                "6",
            )
            cli(
                "bundle", str(run), "--out", str(work / name / "bundle"), "--formats", "tflite-int8"
            )
        out[name] = work / name / "bundle"
    return out


def smoke(bundle: Path, work: Path, cold: bool, baseline: Path) -> Dict[str, Any]:
    """One CI smoke: cache restore (or a cold build), bench, check; seconds per step."""
    from robustedge.device.host import qemu

    cache = work / ("cold-cache" if cold else "warm-cache")
    shutil.rmtree(cache, ignore_errors=True)
    env = {"ROBUSTEDGE_CACHE": str(cache)}
    t: Dict[str, float] = {}
    t0 = time.perf_counter()
    if cold:
        cli("device", "setup-qemu", "--arch", "aarch64", env=env)
    else:
        # A CI cache restores a tar of the folder; cp -a, like tar, keeps the rootfs's device
        # nodes as nodes (shutil.copytree reads /dev/full and /dev/console as files: it filled
        # the disk with 75 GB of zeros, then blocked on the console).
        (cache / "qemu").mkdir(parents=True)
        src = qemu.cache_root() / "aarch64"
        subprocess.run(["cp", "-a", str(src), str(cache / "qemu" / "aarch64")], check=True)
    t["userland"] = time.perf_counter() - t0
    res = work / f"smoke-{'cold' if cold else 'warm'}.json"
    t0 = time.perf_counter()
    cli(
        "bench",
        "--bundle",
        str(bundle),
        "--target",
        "qemu-aarch64",
        *BENCH,
        "--out",
        str(res),
        env=env,
    )
    t["bench"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = cli("check", str(res), *GATES, "--baseline", str(baseline), env=env, ok=(0, 1))
    t["check"] = time.perf_counter() - t0
    t["total"] = sum(t.values())
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "cold": cold,
        "seconds": {k: round(v, 2) for k, v in t.items()},
        "check_rc": r.returncode,
    }


def bench(bundle: Path, out: Path, seed: int) -> Path:
    if not out.is_file():
        cli(
            "bench",
            "--bundle",
            str(bundle),
            "--target",
            "qemu-aarch64",
            *BENCH,
            "--seed",
            str(seed),
            "--out",
            str(out),
        )
    return out


def regression(new: Path, base: Path) -> Dict[str, Any]:
    """The regression gate on ``new`` vs ``base`` (library call: the outcome's numbers)."""
    from robustedge.gates import check

    res = check([new], baseline=base)
    rows = {o.metric: o for o in res.outcomes if o.kind == "regression"}
    d = json.loads(new.read_text())
    return {
        "fired": not res.passed,
        "robust": d["worst_case"]["acc"],
        "clean": d["accuracy"]["clean"],
        "robust_detail": rows["robust"].detail if "robust" in rows else None,
        "clean_detail": rows["clean"].detail if "clean" in rows else None,
        "failures": [o.line for o in res.failures],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/robustedge-ci-smoke"))
    ap.add_argument("--reruns", type=int, default=10)
    ap.add_argument("--cold", action="store_true", help="Also time a cold userland build.")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    bundles = models(a.work)
    base = bench(bundles["good"], a.work / "good-seed0.json", 0)
    runs = [smoke(bundles["good"], a.work, False, base)]
    if a.cold:
        runs.append(smoke(bundles["good"], a.work, True, base))
    noise = [
        regression(bench(bundles["good"], a.work / f"good-seed{s}.json", s), base)
        for s in range(1, a.reruns + 1)
    ]
    worse = {
        n: regression(bench(bundles[n], a.work / f"{n}-seed0.json", 0), base)
        for n in ("s0.7", "s0.8")
    }
    base_robust = json.loads(base.read_text())["worst_case"]["acc"]
    rows: List[List[Any]] = [
        [f"smoke {'cold' if r['cold'] else 'warm'}", *r["seconds"].values()] for r in runs
    ]
    print(table(["run", "userland s", "bench s", "check s", "total s"], rows))
    print(
        table(
            ["rerun", "robust", "fired", "robust test"],
            [
                [i + 1, n["robust"], n["fired"], n["robust_detail"] or "drop <= max_drop"]
                for i, n in enumerate(noise)
            ],
        )
    )
    print(
        table(
            ["student", "robust", "drop pt", "fired", "robust test"],
            [
                [
                    k,
                    v["robust"],
                    round(100 * (base_robust - v["robust"]), 2),
                    v["fired"],
                    v["robust_detail"],
                ]
                for k, v in worse.items()
            ],
        )
    )
    payload = {
        "benchmark": "ci_smoke",
        "hardware": hardware(),
        "load_before": load_before,
        "load_after": loadavg(),
        "bench_args": BENCH,
        "smoke": runs,
        "target_warm_s": 60,
        "noise": {
            "reruns": len(noise),
            "false_alarms": sum(n["fired"] for n in noise),
            "baseline_robust": base_robust,
            "runs": noise,
        },
        "power": worse,
        "note": "qemu-user emulation: latency and wall times are this 2-core VM's, shared "
        "with other jobs (load recorded); regression gate at RegressionConfig defaults",
    }
    MEASURED.mkdir(exist_ok=True)
    (MEASURED / "ci_smoke.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"JSON: {MEASURED / 'ci_smoke.json'}")


if __name__ == "__main__":
    main()
