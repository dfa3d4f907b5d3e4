"""The CI templates (ci/github-actions.yml, ci/gitlab-ci.yml) run for real: each template's
shell steps, in order, in a fresh folder laid out like a user's repository, against the real
qemu-aarch64 userland. Replaced are only the CI vendor's own actions (checkout, setup-python,
cache restore: the machine's built userland linked where the cache would restore it,
artifact upload: the files are checked) and the install step (this machine has robustedge and
qemu-user-static; nothing downloads at test time). The `robustedge` the steps call runs each
command in a process of its own forked from one that has imported robustedge.cli
(tests/cli_fork_server.py: the ~20 calls per run do not each pay the interpreter start).
The gate passes on a good student and fails with exit 1 and the right JUnit failures on a
99.9 %-sparse one, also against the good one's results as the baseline (regression)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml

from cli_fork_server import ForkServer
from conftest import built_once, run_cli
from robustedge.device.host import qemu
from test_device_targets import rootfs

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.export]
ROOT = Path(__file__).resolve().parents[1]
USER_GATES = "expect: ['clean>=0.85', 'robust>=0.25', 'flash_kb<=8', 'parity=pass']\n"
# The template's, smaller: the fewest timed runs that give a p99, and an on-board Square
# attack (its path runs; the PGD transfer set is the worst case that the robust gates see).
FAST_BENCH = "--runs 200 --square-queries 10 --square-n 30"


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> Dict[str, Path]:
    """A tiny FGSM-trained teacher on digits and two students: prox at 50 % (good) and at
    99.9 % sparsity (degraded: about chance accuracy). Built once per session and shared by
    both templates' tests, also when they run on different xdist workers (the tests copy the
    run folders before they export into them)."""
    rootfs("aarch64")
    base = built_once(tmp_path_factory, "ci-template-students", train_students)
    return {name: base / name for name in ("good", "degraded")}


def train_students(base: Path) -> None:
    """The teacher (``base/teacher``) and the two students (``base/good``, ``base/degraded``)
    through the command line, as a user makes them. 12 FGSM epochs at lr 0.03 give the good
    student about 92 % clean and 57 % PGD-20x5 accuracy (the gates need 85 % and 25 %); the
    degraded one keeps one weight of its conv layer, at chance after any fine-tuning."""
    teacher = base / "teacher"
    r = run_cli(
        "train",
        "--model",
        "tiny",
        "--adversary",
        "fgsm",
        "--eps",
        "0.1",
        "--epochs",
        "12",
        "--lr",
        "0.03",
        "--out",
        str(teacher),
    )
    assert r.returncode == 0, r.stderr
    for name, sp, epochs in (("good", "0.5", "3"), ("degraded", "0.999", "1")):
        r = run_cli(
            "compress",
            "--teacher",
            str(teacher),
            "--method",
            "prox",
            "--sparsity",
            sp,
            "--adversary",
            "fgsm",
            "--eps",
            "0.1",
            "--epochs",
            epochs,
            "--finetune-epochs",
            epochs,
            "--out",
            str(base / name),
        )
        assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def cli_bin():
    """The folder of the `robustedge` the template steps find first on PATH."""
    server = ForkServer()
    yield server.bin
    server.stop()


def user_repo(tmp: Path, model: Path) -> Path:
    """A fresh repository: the model's run folder (no export yet) and the user's gates file."""
    repo = tmp / "repo"
    if repo.exists():
        shutil.rmtree(repo / "runs")
    shutil.copytree(model, repo / "runs" / "student", ignore=shutil.ignore_patterns("export"))
    (repo / "ci").mkdir(exist_ok=True)
    (repo / "ci" / "gates.yaml").write_text(USER_GATES)
    shutil.rmtree(repo / "ci-out", ignore_errors=True)
    return repo


def base_env(repo: Path, cli_bin: Path, variables: Dict[str, str]) -> Dict[str, str]:
    """This process' environment, robustedge (``cli_bin``) on PATH, a `sudo` that runs its
    command when we are root and the machine has none, and the template's variables."""
    env = dict(os.environ)
    bin_dir = repo / ".test-bin"
    bin_dir.mkdir(exist_ok=True)
    if shutil.which("sudo") is None and os.geteuid() == 0:
        shim = bin_dir / "sudo"
        shim.write_text('#!/bin/sh\n[ "$1" = "-E" ] && shift\nexec "$@"\n')
        shim.chmod(0o755)
    path = [str(cli_bin), str(bin_dir), str(Path(sys.executable).parent), env["PATH"]]
    env["PATH"] = os.pathsep.join(path)
    env.update(variables)
    env["BENCH_ARGS"] = FAST_BENCH
    return env


def restore_cache(path: str, env: Dict[str, str]) -> bool:
    """actions/cache or GitLab's cache: link the machine's built userland where the CI cache
    would restore it (a hit)."""
    built = qemu.cache_root() / "aarch64"
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        dest.symlink_to(built, target_is_directory=True)
    return True


def bash(script: str, env: Dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


def run_github(repo: Path, cli_bin: Path) -> Tuple[Dict[str, int], str]:
    """The workflow's steps in order, as the runner would: exit code per step id (the first
    failure stops the job; `if: always()` steps still run)."""
    wf = yaml.safe_load((ROOT / "ci" / "github-actions.yml").read_text())
    variables = {
        k: str(v).replace("${{ github.workspace }}", str(repo)) for k, v in wf["env"].items()
    }
    env = base_env(repo, cli_bin, variables)
    outputs: Dict[str, Dict[str, str]] = {}
    rcs: Dict[str, int] = {}
    log, failed = "", False
    for i, step in enumerate(wf["jobs"]["board-gate"]["steps"]):
        sid = step.get("id", f"step{i}")
        cond = step.get("if")
        if failed and cond != "always()":
            continue
        if cond == "steps.qemu-cache.outputs.cache-hit != 'true'":
            if outputs.get("qemu-cache", {}).get("cache-hit") == "true":
                continue
        uses = step.get("uses", "")
        if uses.startswith("actions/cache"):
            key = outputs["qemu-key"]["key"]
            assert step["with"]["key"] == "${{ steps.qemu-key.outputs.key }}"
            assert key == qemu.cache_key("aarch64")
            hit = restore_cache(outputs["qemu-key"]["path"], env)
            outputs[sid] = {"cache-hit": "true" if hit else "false"}
            continue
        if uses.startswith("actions/upload-artifact"):
            assert (repo / step["with"]["path"]).is_dir()
            continue
        if uses or sid == "install":  # checkout, setup-python; install: this machine has it
            continue
        out_file = repo / ".github-output"
        out_file.write_text("")
        env["GITHUB_OUTPUT"], env["GITHUB_STEP_SUMMARY"] = str(out_file), str(repo / "summary")
        proc = bash(step["run"], env, repo)
        log += f"--- {sid} rc={proc.returncode}\n{proc.stdout}{proc.stderr}"
        rcs[sid] = proc.returncode
        outputs[sid] = dict(
            line.split("=", 1) for line in out_file.read_text().splitlines() if "=" in line
        )
        failed = failed or proc.returncode != 0
    return rcs, log


def run_gitlab(repo: Path, cli_bin: Path) -> Tuple[int, str]:
    """The job's `script` in one shell (GitLab stops at the first failing line); the cache
    restored first; `before_script` (install) left to this machine."""
    job = yaml.safe_load((ROOT / "ci" / "gitlab-ci.yml").read_text())["robustedge-board-gate"]
    variables = {
        k: str(v).replace("$CI_PROJECT_DIR", str(repo)) for k, v in job["variables"].items()
    }
    env = base_env(repo, cli_bin, variables)
    for p in job["cache"]["paths"]:
        restore_cache(str(repo / p), env)
    proc = bash("\n".join(job["script"]), env, repo)
    return proc.returncode, proc.stdout + proc.stderr


def failures(repo: Path) -> List[Tuple[str, str, str]]:
    """(model, test case name, failure type) of every failed JUnit test case."""
    root = ET.parse(repo / "ci-out" / "junit.xml").getroot()
    return [
        (c.get("classname"), c.get("name"), c.find("failure").get("type"))
        for c in root.iter("testcase")
        if c.find("failure") is not None
    ]


def test_github_template_passes_good_fails_degraded(students, cli_bin, tmp_path):
    repo = user_repo(tmp_path, students["good"])
    rcs, log = run_github(repo, cli_bin)
    assert rcs["check"] == 0 and all(v == 0 for v in rcs.values()), log
    assert "setup-qemu" not in rcs  # a cache hit: the userland was not rebuilt
    assert failures(repo) == []
    assert "all gates hold" in (repo / "summary").read_text()
    # the good run becomes the accepted baseline; then a 99.9 %-sparse student arrives
    (repo / "ci" / "baseline").mkdir()
    shutil.copy(repo / "ci-out" / "results-qemu-aarch64.json", repo / "ci" / "baseline")
    repo = user_repo(tmp_path, students["degraded"])
    rcs, log = run_github(repo, cli_bin)
    assert rcs["check"] == 1, log
    fails = failures(repo)
    names = {(m, n, t) for m, n, t in fails}
    assert ("student", "qemu-aarch64 [tflite-int8]: robust>=0.25", "gate") in names, fails
    assert ("student", "qemu-aarch64 [tflite-int8]: robust vs baseline", "regression") in names
    line = next(x for x in log.splitlines() if x.startswith("FAIL student @ qemu-aarch64"))
    assert re.search(r"needs >= 0\.\d+", line)


def test_gitlab_template_passes_good_fails_degraded(students, cli_bin, tmp_path):
    repo = user_repo(tmp_path, students["good"])
    rc, log = run_gitlab(repo, cli_bin)
    assert rc == 0 and failures(repo) == [], log
    repo = user_repo(tmp_path, students["degraded"])
    rc, log = run_gitlab(repo, cli_bin)
    assert rc == 1, log
    assert any(n.endswith("clean>=0.85") for _, n, _ in failures(repo))
    assert "robustedge.gates" not in log and "Traceback" not in log


def test_robustedge_on_path_answers_as_the_console_script(cli_bin, tmp_path):
    """The steps' `robustedge` (tests/cli_fork_server.py) gives what the installed console
    script gives: stdout, stderr and exit status, in the caller's folder (a relative path)
    and environment (ROBUSTEDGE_CACHE), its output through a pipe."""
    console = Path(sys.executable).parent / "robustedge"
    assert console.is_file()
    (tmp_path / "bad.json").write_text("{not json")
    env = {**os.environ, "ROBUSTEDGE_CACHE": str(tmp_path / "cache")}
    check = "check bad.json --expect 'clean>=0.5'"
    calls = (check, "device cache-key --arch aarch64 --path | rev")
    for args in calls:
        got, want = (
            bash(f"{cli_bin}/robustedge {args}", env, tmp_path),
            bash(f"{console} {args}", env, tmp_path),
        )
        assert (got.returncode, got.stdout, got.stderr) == (
            want.returncode,
            want.stdout,
            want.stderr,
        )
    bad = bash(f"{cli_bin}/robustedge {check}", env, tmp_path)
    assert bad.returncode == 2 and "bad.json: not a readable results file" in bad.stderr
    assert got.stdout.strip()[::-1] == str(tmp_path / "cache" / "qemu" / "aarch64")
