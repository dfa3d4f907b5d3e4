"""Planted bugs: does the test suite notice the bugs people really write?

Each entry below is a realistic 1-3 line bug (the kind a reviewer misses: a dual update with
the wrong sign, a cache that no longer follows its key, a percentile in the wrong unit, a hash
compared as a prefix, a setting silently ignored). For each bug, one at a time, the committed
tree (``git archive HEAD``, or the working tree with ``--worktree``) is copied into a temp
folder, the bug is applied there (never in the checkout: the exact ``old`` text must occur once
in the file, else the entry is stale and reported as such), and the bug's related tests run
against the copy (``PYTHONPATH=<copy>/src``). Killed = the tests fail; survived = they pass.

    python benchmarks/bugs.py   # every bug -> benchmarks/measured/planted_bugs.json
    python benchmarks/bugs.py --only admm-dual-sign apgd-no-restart-from-best
    python benchmarks/bugs.py --list
    python benchmarks/bugs.py --baseline      # the related tests must pass on the unmodified copy

Prints a table and writes JSON (hardware and load recorded) to benchmarks/measured/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit  # noqa: E402
from bug_catalog import ALGORITHMS, Bug  # noqa: E402
from bug_catalog_edges import EDGES  # noqa: E402
from bug_catalog_more import MORE  # noqa: E402

BUGS = ALGORITHMS + EDGES + MORE

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "measured" / "planted_bugs.json"
TIMEOUT = 900


def copy_tree(worktree: bool, dst: Path) -> None:
    """The committed tree (``git archive HEAD``) or the working tree's src/ and tests/."""
    if worktree:
        for part in ("src", "tests", "pyproject.toml", "recipes", "benchmarks", "docs"):
            p = ROOT / part
            if p.is_dir():
                shutil.copytree(p, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
            elif p.exists():
                shutil.copy2(p, dst / part)
        return
    data = subprocess.run(
        ["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dst, filter="data")


def plant(root: Path, b: Bug) -> Optional[str]:
    """Apply ``b`` in the copy at ``root``; an error text when its ``old`` is not there once."""
    path = root / "src" / "robustedge" / b.file
    text = path.read_text()
    count = text.count(b.old)
    if count != 1:
        return f"stale: the old text occurs {count} times in {b.file}"
    path.write_text(text.replace(b.old, b.new))
    return None


def run_tests(root: Path, tests: Sequence[str]) -> Tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
    ]
    cmd += ["-o", "addopts=", "--timeout", str(TIMEOUT), *tests]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return 124, time.monotonic() - t0, "timeout"
    failed = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return r.returncode, time.monotonic() - t0, (failed[0] if failed else r.stdout[-300:])


def measure_one(b: Bug, worktree: bool, baseline: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="plant-") as tmp:
        root = Path(tmp)
        copy_tree(worktree, root)
        err = None if baseline else plant(root, b)
        if err:
            return {**asdict(b), "status": "stale", "detail": err, "seconds": 0.0}
        rc, secs, detail = run_tests(root, b.tests)
    if baseline:
        status = "passes" if rc == 0 else "baseline-fails"
    else:
        status = {0: "survived", 1: "killed"}.get(rc, "killed" if rc == 124 else f"error rc={rc}")
    return {**asdict(b), "status": status, "detail": detail, "seconds": round(secs, 1)}


def load_avg() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def summarize(rows: Sequence[dict]) -> dict:
    counted = [r for r in rows if r["status"] in ("killed", "survived")]
    killed = sum(r["status"] == "killed" for r in counted)
    return {
        "bugs": len(rows),
        "killed": killed,
        "survived": len(counted) - killed,
        "other": len(rows) - len(counted),
        "kill_ratio": round(killed / len(counted), 4) if counted else None,
    }


def save(out: Path, rows: List[dict], meta: dict, merge: bool) -> dict:
    """Write the record (after every bug, so an interrupted run keeps what it measured); a
    partial run (``--only``) is merged into the existing record."""
    record = {**meta, "load_after": load_avg()}
    if merge and out.exists():  # the earlier rows keep their run's record (provenance)
        old = json.loads(out.read_text())
        run = {**record, "bugs": [r["name"] for r in rows]}
        added = [a for a in old.get("added", []) if a.get("started") != meta["started"]]
        by_name = {r["name"]: r for r in old.get("bugs", [])}
        by_name.update({r["name"]: {**r, "run": f"added[{len(added)}]"} for r in rows})
        rows = [by_name[b.name] for b in BUGS if b.name in by_name]
        keep = ("what", "commit", "hardware", "load_before", "load_after")
        record = {**{k: old[k] for k in keep if k in old}, "added": [*added, run]}
    record.update(summary=summarize(rows), bugs=rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out)
    return record


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="bug names to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the bugs and exit")
    ap.add_argument("--worktree", action="store_true", help="copy the working tree, not HEAD")
    ap.add_argument("--baseline", action="store_true", help="run the tests without the bugs")
    ap.add_argument("--out", type=Path, default=OUT, help="JSON output [%(default)s]")
    args = ap.parse_args(argv)
    bugs = [b for b in BUGS if not args.only or b.name in args.only]
    if args.only and len(bugs) != len(set(args.only)):
        known = {b.name for b in BUGS}
        print(f"unknown bugs: {', '.join(sorted(set(args.only) - known))}", file=sys.stderr)
        return 2
    if args.list:
        for b in bugs:
            print(f"{b.name:32s} {b.cls:10s} {b.file:32s} {b.what}")
        return 0
    meta = {
        "what": "realistic planted bugs, one at a time, each against its related tests",
        "commit": commit() + (" + working tree" if args.worktree else ""),
        "hardware": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}",
        "load_before": load_avg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    rows: List[dict] = []
    for b in bugs:
        row = measure_one(b, args.worktree, args.baseline)
        rows.append(row)
        print(f"{row['status']:14s} {row['seconds']:7.1f}s  {b.name:32s} {row['detail'][:90]}")
        if not args.baseline:
            save(args.out, rows, meta, merge=bool(args.only))
    print(json.dumps(summarize(rows)))
    if args.baseline:
        return 0 if all(r["status"] == "passes" for r in rows) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
