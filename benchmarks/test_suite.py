"""How long `make test`'s pytest line takes: wall and CPU time, counts, the 20 slowest tests.

Runs exactly the Makefile's test command (`pytest -n 2 --dist load`, OMP_NUM_THREADS=1, bytecode
cached: PYTHONDONTWRITEBYTECODE empty) with a
JUnit XML report, measures its wall time and the CPU time of the whole process tree
(RUSAGE_CHILDREN: workers, subprocesses, QEMU), and writes
benchmarks/measured/test_suite.json (hardware, load before and after, commit, date).
Style checks and system dependencies (`make style system-deps`) are not part of the figure.

Usage: python benchmarks/test_suite.py [--workers 2] [-- extra pytest args]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit as short_commit  # noqa: E402
from _common import hardware, loadavg, table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MEASURED = Path(__file__).resolve().parent / "measured"
SLOWEST = 20


def cases(junit: Path) -> List[Dict[str, object]]:
    """Every test case of a JUnit report: id, seconds (setup + call + teardown), outcome."""
    out: List[Dict[str, object]] = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        mod = case.get("classname", "").replace(".", "/")
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        test = f"{mod}.py::{case.get('name')}"
        out.append({"test": test, "seconds": float(case.get("time", 0.0)), "outcome": outcome})
    return out


def summary(found: List[Dict[str, object]]) -> Dict[str, object]:
    """Counts by outcome, the slowest tests (slowest first), and the seconds of each test
    module (tests/conftest.py runs the longest modules first under xdist, from these)."""
    counts = {k: sum(c["outcome"] == k for c in found) for k in ("passed", "failed", "skipped")}
    ranked = sorted(found, key=lambda c: -float(c["seconds"]))  # type: ignore[arg-type]
    slowest = [{"test": c["test"], "seconds": round(float(c["seconds"]), 2)} for c in ranked]
    modules: Dict[str, float] = {}
    for c in found:
        name = Path(str(c["test"]).split("::")[0]).stem
        modules[name] = modules.get(name, 0.0) + float(c["seconds"])  # type: ignore[arg-type]
    by_time = sorted(modules.items(), key=lambda kv: -kv[1])
    return {**counts, "slowest": slowest[:SLOWEST], "modules": {k: round(v, 1) for k, v in by_time}}


def run(workers: int, extra: List[str]) -> Dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-n", str(workers), "--dist", "load", "-q"]
        cmd += ["-p", "no:cacheprovider", f"--junitxml={junit}", *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": ""}
        load_before = loadavg()
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        wall = time.perf_counter() - t0
        use = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "command": " ".join(["pytest", *cmd[3:-1]]),
            "exit_code": rc,
            "wall_s": round(wall, 1),
            "cpu_s": round(use.ru_utime + use.ru_stime, 1),
            "load_before": load_before,
            "load_after": loadavg(),
            **summary(cases(junit)),
        }


def commit() -> str:
    """The short commit hash, ``-dirty`` when the working tree differs from it."""
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True)
    return short_commit() + ("-dirty" if dirty.stdout.strip() else "")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("extra", nargs="*", help="extra pytest arguments (after --)")
    a = p.parse_args()
    result = {
        "benchmark": "test_suite",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "hardware": hardware(),
        "workers": a.workers,
        **run(a.workers, a.extra),
    }
    MEASURED.mkdir(exist_ok=True)
    (MEASURED / "test_suite.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        table(
            ["wall s", "cpu s", "passed", "failed", "skipped"],
            [[result[k] for k in ("wall_s", "cpu_s", "passed", "failed", "skipped")]],
        )
    )
    print(table(["s", "test"], [[c["seconds"], c["test"]] for c in result["slowest"]]))
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
