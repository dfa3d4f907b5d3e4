"""Crash safety: `kill -9` every stage at random points, check what is left, re-run it.

For each of train, compress, export, bundle, deploy (local folder target) and a recipe run, the
stage's real command (`python -m robustedge.cli ...`, its own process group) is started and
killed with SIGKILL after a random delay drawn uniformly from [0, T], T being the duration of
one uninterrupted run measured first. After each kill:

- nothing half-written may be taken as valid: every JSON/YAML file the stage left parses, a
  finished-looking run folder loads (weights against architecture), an export folder's files
  match export.json's sha256, a bundle passes verify_bundle, and for the recipe every
  ``stages/*/stage.json`` record names outputs that exist with the recorded sha256 (the cache
  never marks a stage done whose outputs are missing or corrupt);
- finished results are never lost: export, bundle and deploy are killed while *replacing* a
  complete earlier result, which must still be valid (old or new) after the kill;
- the same command run again completes (train gets ``--resume`` when its folder has content).

Leftover temporary files (``.name.*.tmp``, staging folders) are counted: they are litter, not
results. Usage (about an hour on a busy 2-core VM with OMP_NUM_THREADS=1)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/crash.py [--points 10] [--seed 0]

Writes ``benchmarks/measured/crash.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import hardware, table  # noqa: E402

MEASURED = Path(__file__).resolve().parent / "measured" / "crash.json"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

RECIPE = """name: crash
seed: 0
data: {name: digits}
teacher:
  train: {model: tiny, adversary: none, epochs: 2}
compress:
  - {name: p, method: prox, adversary: none, sparsity: 0.5, epochs: 1, finetune_epochs: 1}
export: {formats: [onnx]}
devices:
  targets: [local]
  runs: 200
  square_queries: 0
"""


def cli(*args: str) -> List[str]:
    return [sys.executable, "-m", "robustedge.cli", *args]


def run(cmd: List[str], cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def run_and_kill(cmd: List[str], cwd: Path, delay: float) -> Tuple[bool, float]:
    """Start ``cmd``; SIGKILL its process group after ``delay`` s. (killed?, seconds run)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=delay)
        return False, time.perf_counter() - t0  # finished before the kill
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True, time.perf_counter() - t0


# ---------------------------------------------------------------- checks (empty list: fine)


def litter(folder: Path) -> int:
    """Temporary files/folders a SIGKILL left behind (atomic_path/staging_dir/upload names all
    start with a dot; results never do)."""
    if not folder.exists():
        return 0
    return sum(1 for _ in folder.rglob(".*"))


def parse_all(folder: Path) -> List[str]:
    """Every visible JSON/YAML file below ``folder`` parses."""
    from robustedge.io import read_json, read_yaml

    bad = []
    for p in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue  # temporary files and staging folders are not results
        try:
            if p.suffix == ".json":
                read_json(p)
            elif p.suffix == ".yaml":
                read_yaml(p)
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            bad.append(f"{p.relative_to(folder)}: {e}")
    return bad


def check_run(folder: Path, finished_required: bool = False) -> List[str]:
    """A run folder: files parse; once metrics.json exists, the model loads; last.pt loads."""
    from robustedge.models import load_model, safe_torch_load

    if not folder.exists():
        return ["run folder missing"] if finished_required else []
    problems = parse_all(folder)
    if (folder / "metrics.json").is_file():
        try:
            load_model(folder)
        except Exception as e:  # noqa: BLE001
            problems.append(f"metrics.json present but model does not load: {e}")
    elif finished_required:
        problems.append("no metrics.json")
    last = folder / "checkpoint" / "last.pt"
    if last.is_file():
        try:
            safe_torch_load(last)
        except Exception as e:  # noqa: BLE001
            problems.append(f"checkpoint/last.pt: {e}")
    return problems


def check_export(run_dir: Path) -> List[str]:
    from robustedge.hashing import sha256_file

    exp = run_dir / "export"
    if not (exp / "export.json").is_file():
        return ["export/export.json missing (a finished export was lost)"]
    problems = parse_all(exp)
    doc = json.loads((exp / "export.json").read_text())
    for fmt, art in doc["artifacts"].items():
        p = exp / art["file"]
        if not p.is_file() or sha256_file(p) != art["sha256"]:
            problems.append(f"artifact {fmt} missing or not matching export.json")
    for name, rel in doc["eval_sets"].items():
        p = exp / rel
        if not p.is_file() or sha256_file(p) != doc["eval_sha256"][name]:
            problems.append(f"eval set {name} missing or not matching export.json")
    return problems


def check_bundle(path: Path) -> List[str]:
    from robustedge.device.board.bundle_format import verify_bundle

    try:
        verify_bundle(path)
    except Exception as e:  # noqa: BLE001
        return [f"bundle {path.name}: {e}"]
    return []


def check_recipe(out: Path) -> List[str]:
    """Every stage record's outputs exist with the recorded sha256."""
    from robustedge.hashing import sha256_file

    if not out.exists():
        return []
    problems = parse_all(out)
    for rec in sorted(out.glob("stages/*/stage.json")):
        try:
            outputs = json.loads(rec.read_text())["outputs"]
        except Exception as e:  # noqa: BLE001
            problems.append(f"{rec.relative_to(out)} unreadable: {e}")
            continue
        for rel, sha in outputs.items():
            p = out / rel
            if not p.is_file() or sha256_file(p) != sha:
                problems.append(f"{rec.parent.name} marked done but {rel} is missing/corrupt")
    return problems


# ---------------------------------------------------------------- stages


class Stage:
    def __init__(
        self,
        name: str,
        cmd: Callable[[], List[str]],
        check: Callable[[], List[str]],
        done: Callable[[], List[str]],
        reset: Callable[[], None],
        where: Callable[[], Path],
    ) -> None:
        self.name, self.cmd, self.check, self.done = name, cmd, check, done
        self.reset, self.where = reset, where


def make_stages(work: Path) -> Dict[str, Stage]:
    teacher, student = work / "teacher", work / "student"
    bundle, board = work / "bundle", work / "board"
    train_out, comp_out, recipe_out = work / "train", work / "comp", work / "recipe"
    (work / "crash.yaml").write_text(RECIPE)

    def rm(p: Path) -> Callable[[], None]:
        return lambda: shutil.rmtree(p, ignore_errors=True)

    def train_cmd() -> List[str]:
        resume = ["--resume"] if train_out.exists() and any(train_out.iterdir()) else []
        args = ["--model", "tiny", "--adversary", "none", "--epochs", "3", "--no-progress"]
        return cli("train", *args, "--out", str(train_out), *resume)

    comp = ["--teacher", str(teacher), "--method", "prox", "--adversary", "none"]
    comp += ["--sparsity", "0.5", "--epochs", "1", "--finetune-epochs", "1"]

    def comp_cmd() -> List[str]:  # like train: a killed run left a checkpoint to resume
        resume = ["--resume"] if comp_out.exists() and any(comp_out.iterdir()) else []
        return cli("compress", *comp, "--out", str(comp_out), *resume)

    return {
        "train": Stage(
            "train",
            train_cmd,
            lambda: check_run(train_out),
            lambda: check_run(train_out, finished_required=True),
            rm(train_out),
            lambda: train_out,
        ),
        "compress": Stage(
            "compress",
            comp_cmd,
            lambda: check_run(comp_out),
            lambda: check_run(comp_out, finished_required=True),
            rm(comp_out),
            lambda: comp_out,
        ),
        "export": Stage(
            "export",
            lambda: cli("export", str(student), "--formats", "onnx"),
            lambda: check_export(student),
            lambda: check_export(student),
            lambda: None,  # killed while replacing the finished export
            lambda: student,
        ),
        "bundle": Stage(
            "bundle",
            lambda: cli("bundle", str(student), "--out", str(bundle)),
            lambda: check_bundle(bundle),
            lambda: check_bundle(bundle),
            lambda: None,  # killed while replacing the finished bundle
            lambda: work,
        ),
        "deploy": Stage(
            "deploy",
            lambda: cli("deploy", str(bundle), "--target", str(board)),
            lambda: check_bundle(board / bundle.name),
            lambda: check_bundle(board / bundle.name),
            lambda: None,  # killed while replacing the finished deployment
            lambda: board,
        ),
        "recipe": Stage(
            "recipe",
            lambda: cli("run", str(work / "crash.yaml"), "--out", str(recipe_out)),
            lambda: check_recipe(recipe_out),
            lambda: check_recipe(recipe_out) + _summary_done(recipe_out),
            rm(recipe_out),  # each kill from scratch; the re-run resumes from the cache
            lambda: recipe_out,
        ),
    }


def _summary_done(out: Path) -> List[str]:
    try:
        s = json.loads((out / "summary.json").read_text())
    except Exception as e:  # noqa: BLE001
        return [f"summary.json: {e}"]
    bad = [x["id"] for x in s["stages"] if x["status"] not in ("done", "cached", "skipped")]
    return [f"stages not finished: {bad}"] if bad else []


def prepare(work: Path) -> None:
    """A finished teacher and student, an export, a bundle and a deployment to replace."""
    steps = [
        cli("train", "--model", "tiny", "--adversary", "none", "--epochs", "3", "--no-progress")
        + ["--out", str(work / "teacher")],
        cli("compress", "--teacher", str(work / "teacher"), "--method", "prox")
        + ["--adversary", "none", "--sparsity", "0.5", "--epochs", "1", "--finetune-epochs", "1"]
        + ["--out", str(work / "student")],
        cli("export", str(work / "student"), "--formats", "onnx"),
        cli("bundle", str(work / "student"), "--out", str(work / "bundle")),
        cli("deploy", str(work / "bundle"), "--target", str(work / "board")),
    ]
    for cmd in steps:
        proc = run(cmd, work)
        if proc.returncode != 0:
            raise SystemExit(f"setup failed: {' '.join(cmd[3:])}\n{proc.stderr[-2000:]}")


def trial_stage(stage: Stage, work: Path, points: int, rng: random.Random) -> Dict[str, object]:
    stage.reset()
    t0 = time.perf_counter()
    proc = run(stage.cmd(), work)
    full = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{stage.name}: uninterrupted run failed:\n{proc.stderr[-2000:]}")
    trials = []
    estimate = full
    for i in range(points):
        for attempt in range(6):  # noqa: B007 - every point a real kill: retry if it finished
            if stage.name in ("train", "compress", "recipe"):
                stage.reset()  # kill a fresh run (the re-run then resumes / uses the cache)
            delay = rng.uniform(0.0, estimate)
            killed, ran = run_and_kill(stage.cmd(), work, delay)
            if killed:
                break
            estimate = 0.9 * ran  # it finished sooner than the estimate: aim lower
        after_kill = stage.check()
        left = litter(stage.where())
        t = time.perf_counter()
        again = run(stage.cmd(), work)
        rerun_s = time.perf_counter() - t
        after_rerun = stage.done() if again.returncode == 0 else []
        trials.append(
            {
                "delay_s": round(delay, 2),
                "killed": killed,
                "attempts": attempt + 1,
                "problems_after_kill": after_kill,
                "litter_after_kill": left,
                "rerun_rc": again.returncode,
                "rerun_error": again.stderr.strip().splitlines()[-1:] if again.returncode else [],
                "rerun_s": round(rerun_s, 1),
                "problems_after_rerun": after_rerun,
            }
        )
        status = "ok" if not after_kill and again.returncode == 0 and not after_rerun else "FAIL"
        print(f"  {stage.name} #{i} kill at {delay:.1f}s/{full:.1f}s: {status}", flush=True)
    return {"uninterrupted_s": round(full, 1), "trials": trials}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10, help="kill points per stage")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", default="train,compress,export,bundle,deploy,recipe")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    ap.add_argument("--out", type=Path, default=MEASURED)
    ap.add_argument(
        "--merge", action="store_true", help="replace only these stages in an existing --out"
    )
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="robustedge-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    prepare(work)
    stages = make_stages(work)
    results = {}
    for name in args.stages.split(","):
        print(f"{name}:", flush=True)
        results[name] = trial_stage(stages[name], work, args.points, rng)
    if args.merge and args.out.is_file():
        before = json.loads(args.out.read_text())["stages"]
        results = {**before, **results}
        results = {k: results[k] for k in make_stages(work) if k in results}
    rows = []
    for name, r in results.items():
        tr = r["trials"]
        rows.append(
            [
                name,
                len(tr),
                sum(t["killed"] for t in tr),
                r["uninterrupted_s"],
                sum(bool(t["problems_after_kill"]) for t in tr),
                sum(t["rerun_rc"] == 0 for t in tr),
                sum(bool(t["problems_after_rerun"]) for t in tr),
                sum(t["litter_after_kill"] for t in tr),
            ]
        )
    headers = [
        "stage",
        "points",
        "killed",
        "full run s",
        "bad state after kill",
        "re-run ok",
        "bad after re-run",
        "temp litter",
    ]
    print(table(headers, rows))
    ok = all(r[4] == 0 and r[5] == r[1] and r[6] == 0 for r in rows)
    payload = {
        "benchmark": "crash safety: SIGKILL at random points, then re-run",
        "hardware": hardware(),
        "note": "2-core AMD EPYC x86_64 VM, OMP_NUM_THREADS=1; delays uniform in [0, full run]",
        "seed": args.seed,
        "points_per_stage": args.points,
        "recipe": RECIPE,
        "passed": ok,
        "wall_s": round(time.perf_counter() - t0, 1),
        "table": {"headers": headers, "rows": rows},
        "stages": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"{'PASSED' if ok else 'FAILED'}: {args.out}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
