"""What the on-board robust accuracy costs: worst case of the replayed PGD transfer set and the
on-board Square attack, per Square budget, per target.

For each exported run (``--runs DIR ...``, e.g. the demo's LeNet-5 x4 teacher and its 95 %
student on digits, 450 test images) the tflite-int8 bundle is benched (``--runs 0``: no latency
timing, so the wall time is the evaluation + attack) with each Square setting ``QUERIES:N``
(``N`` = ``all`` or a number of images). On emulated targets the attack runs on a subset
(``--emulated-settings``) and the full-set time is extrapolated linearly in images (marked
``~``): Square-1000 on 450 images under qemu-user takes far too long to measure on a shared
2-core host. "Square CPU s" is the runner process' own CPU time (``time.process_time`` on the
board), which other load on a shared host does not inflate; wall seconds are shown beside it.
Prints a table and writes benchmarks/measured/board_robust.json with the host's load average
before and after.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/board_robust.py --runs RUN [RUN ...] \\
        [--targets local,qemu-aarch64] [--settings 1000:all,300:all,100:50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import hardware, table, write_result  # noqa: E402

MEASURED = Path(__file__).resolve().parent / "measured"


def parse_settings(text: str) -> List[Tuple[int, str]]:
    out = []
    for item in text.split(","):
        q, _, n = item.strip().partition(":")
        out.append((int(q), n or "all"))
    return out


def bench(bundle: Path, target: str, queries: int, n: str) -> Dict[str, Any]:
    from robustedge.device.host.targets import make_target

    args = ["--runs", "0", "--square-queries", str(queries), "--square-n", n]
    t0 = time.perf_counter()
    r = make_target(target).bench(bundle, args)
    r["bench_wall_s"] = round(time.perf_counter() - t0, 2)
    return r


def row(run: str, target: str, r: Dict[str, Any]) -> List[Any]:
    sq = (r.get("robust") or [{}])[0]
    wc = r.get("worst_case") or {}
    n_total = wc.get("n_total") or r["n_eval"]["clean"]
    secs = sq.get("seconds", 0.0)
    cpu = sq.get("cpu_seconds", secs)  # the runner's own CPU time: robust to host load
    full = cpu if sq.get("n") == n_total else cpu * n_total / max(1, sq.get("n", 1))
    return [
        run,
        target + (" (EMULATED)" if r.get("emulated") else ""),
        f"{sq.get('name', '-')} n={sq.get('n', '-')}/{n_total}",
        f"{100 * r['accuracy']['clean']:.1f}",
        f"{100 * r['accuracy']['transfer']:.1f}",
        f"{100 * sq['acc']:.1f}" if sq else "-",
        f"{100 * wc['acc']:.1f}" if wc else "-",
        sq.get("mean_queries", "-"),
        f"{secs:.1f}",
        f"{sq.get('cpu_seconds', float('nan')):.1f}",
        f"{full:.0f}" if sq.get("n") == n_total else f"~{full:.0f}",
        f"{r['bench_wall_s']:.1f}",
        "yes" if wc.get("weaker") else "no",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", type=Path, required=True)
    p.add_argument("--targets", default="local")
    p.add_argument("--settings", default="1000:all,300:all,100:50")
    p.add_argument("--emulated-settings", default="1000:20")
    p.add_argument("--name", default="board_robust")
    a = p.parse_args()
    from robustedge.device.host.bundle import build_bundle

    load_before = os.getloadavg()
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in a.runs:
            # a name of its own: emulated userlands are shared with other bundles
            bundle = build_bundle(run, Path(tmp) / f"board_robust-{run.name}", ["tflite-int8"])
            for target in a.targets.split(","):
                emulated = target.startswith(("qemu-", "vm-"))
                for q, n in parse_settings(a.emulated_settings if emulated else a.settings):
                    r = bench(bundle, target, q, n)
                    r["run"] = str(run)
                    results.append(r)
                    rows.append(row(run.name, target, r))
                    print(table(HEADERS, rows[-1:]), flush=True)
    load_after = os.getloadavg()
    hw = hardware()
    print(
        f"\non-board robust accuracy cost on {hw['cpu']} ({hw['cores']}-core x86_64 host), "
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; EMULATED rows: "
        "qemu-user, '~' = extrapolated from the subset linearly in images"
    )
    print(table(HEADERS, rows))
    payload = {
        "hardware": hw,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "headers": HEADERS,
        "rows": rows,
        "results": results,
    }
    out = write_result(a.name, payload)
    MEASURED.mkdir(exist_ok=True)
    shutil.copyfile(out, MEASURED / f"{a.name}.json")
    print(f"JSON: {out} (copy in {MEASURED / (a.name + '.json')})")
    json.loads((MEASURED / f"{a.name}.json").read_text())


HEADERS = [
    "run",
    "target",
    "Square",
    "clean %",
    "transfer %",
    "Square %",
    "worst case %",
    "mean queries",
    "Square s",
    "Square CPU s",
    "Square CPU s (all images)",
    "bench wall s",
    "weaker",
]

if __name__ == "__main__":
    main()
