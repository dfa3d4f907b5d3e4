"""Recipe executors: Ray tasks give the serial run's cache and outputs; a failing stage leaves
the finished ones cached; Ctrl-C stops; device targets (a board fleet) bench at once."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _ray_fixtures import STAGES, shared_sweep, sweep_recipe, wait_for_task
from robustedge.errors import RobustEdgeError
from robustedge.recipe.executors import (
    ExecutorSpec,
    LocalBackend,
    run_stages,
    schedule,
    stage_resources,
)
from robustedge.recipe.runner import SkipStage, Stage, StageRunner

VOLATILE = {"seconds", "finished", "rss_peak_bytes", "memory"}


def write(tmp_path: Path, shared: Path, extra: str = "") -> Path:
    """The shared sweep (``ray_sweep``) with ``extra`` compress entries, in ``tmp_path``."""
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_recipe(shared, extra))
    return path


def run(recipe: Path, out: Path, executor: ExecutorSpec):
    from robustedge.recipe import load_recipe
    from robustedge.recipe.stages import run_recipe

    return run_recipe(load_recipe(recipe), out, executor=executor)


def records(out: Path):
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "stages").glob("*/stage.json")}


def normalised(path: Path, out: Path):
    """A file's content with the output folder's path and timings taken out."""
    text = path.read_bytes().replace(str(out).encode(), b"OUT")
    if path.suffix != ".json":
        return text

    def drop(v):
        if isinstance(v, dict):
            return {k: drop(x) for k, x in v.items() if k not in VOLATILE}
        if isinstance(v, list):
            return [drop(x) for x in v]
        return v

    return drop(json.loads(text))


needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the [scale] extra (Ray) is not installed"
)
FAILING_FACTORY = (
    "def build(input_shape, num_classes):\n    raise ValueError('out of GPU memory')\n"
)


@pytest.fixture(scope="module")
def ray_sweep(tmp_path_factory, digits) -> Path:
    """The sweep and its serial run, shared with test_ray_cluster.py (``_ray_fixtures``)."""
    return shared_sweep(tmp_path_factory, digits)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray instance (2 CPUs) for this module's in-process runs, which join it as
    they would join a cluster (each stage still starts a worker of its own). They have a folder
    with ``failing_factory.py`` on their path (Ray's workers take the environment Ray starts
    with). The executor's own start and shutdown of Ray run in the Ctrl-C test."""
    import ray

    factories = tmp_path_factory.mktemp("factories")
    (factories / "failing_factory.py").write_text(FAILING_FACTORY)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{factories}{os.pathsep}{saved or ''}"
    sys.path.insert(0, str(factories))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield factories
    finally:
        ray.shutdown()
        sys.path.remove(str(factories))
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


@needs_ray
@pytest.mark.slow
def test_ray_reproduces_the_serial_run(ray_sweep, tmp_path, local_ray):
    recipe, serial, parallel = ray_sweep / "sweep.yaml", ray_sweep / "serial", tmp_path / "ray"
    s_sum = json.loads((serial / "summary.json").read_text())  # the serial run (shared)
    r_sum = run(recipe, parallel, ExecutorSpec("ray", num_cpus=2))
    assert [x["id"] for x in r_sum["stages"]] == [x["id"] for x in s_sum["stages"]]
    assert all(x["status"] == "done" for x in r_sum["stages"])
    s_rec, r_rec = records(serial), records(parallel)
    assert s_rec.keys() == r_rec.keys() and len(s_rec) == STAGES
    for sid, rec in s_rec.items():
        assert rec["outputs"].keys() == r_rec[sid]["outputs"].keys(), sid
        for rel, sha in rec["outputs"].items():
            if rel.endswith((".safetensors",)):  # weights and masks: the same bytes
                assert r_rec[sid]["outputs"][rel] == sha, (sid, rel)
            assert normalised(serial / rel, serial) == normalised(parallel / rel, parallel)
    # the same cache: Ray on the serial folder (a copy: the shared one is only read), and
    # serial on the Ray folder, redo nothing
    mine = tmp_path / "serial"
    shutil.copytree(serial, mine)
    again = run(recipe, mine, ExecutorSpec("ray", num_cpus=2))
    assert {x["status"] for x in again["stages"]} == {"cached"}
    assert {k: v["input_hash"] for k, v in records(mine).items()} == {
        k: v["input_hash"] for k, v in s_rec.items()
    }
    back = run(recipe, parallel, ExecutorSpec())
    assert {x["status"] for x in back["stages"]} == {"cached"}


FAILING = """\
  - name: broken
    method: magnitude
    model: "failing_factory:build"
    adversary: none
    eps: 0.0
    sparsity: [0.5]
    epochs: 1
    finetune_epochs: 0
"""


@needs_ray
@pytest.mark.slow
def test_a_failing_stage_leaves_finished_stages_cached(ray_sweep, tmp_path, local_ray):
    recipe = write(tmp_path, ray_sweep, FAILING)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="out of GPU memory"):
        run(recipe, out, ExecutorSpec("ray", num_cpus=2))
    done = records(out)
    assert "student-broken-s0.5" not in done
    assert {"teacher", "student-prox-s0.5", "student-prox-s0.8", "student-mag-s0.5"} <= set(done)
    write(tmp_path, ray_sweep)  # without the broken student
    summary = run(tmp_path / "sweep.yaml", out, ExecutorSpec())
    status = {x["id"]: x["status"] for x in summary["stages"]}
    for sid in done:
        assert status[sid] == "cached", sid


@needs_ray
def test_each_ray_stage_runs_in_a_fresh_worker_process(tmp_path, local_ray):
    """max_calls=1: three chained stages, three worker processes (a reused worker's ru_maxrss,
    recorded as a stage's peak RSS, would be the largest of every stage it ran; and a node
    with a warm worker took every queued stage while another node's worker started)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the bodies, by value

    def pid_stage(sid: str, upstream=()) -> Stage:
        path = tmp_path / f"{sid}.pid"
        body = lambda: path.write_text(str(os.getpid()))  # noqa: E731
        return Stage(sid, "evaluate", {"id": sid}, body, lambda: [path], upstream=upstream)

    stages = [pid_stage("a"), pid_stage("b", ("a",)), pid_stage("c", ("b",))]
    run_stages(StageRunner(tmp_path), stages, ExecutorSpec("ray"))
    pids = {(tmp_path / f"{sid}.pid").read_text() for sid in "abc"}
    assert len(pids) == 3 and str(os.getpid()) not in pids


@needs_ray
@pytest.mark.slow
def test_ctrl_c_stops_a_ray_run_cleanly(ray_sweep, tmp_path):
    recipe = ray_sweep / "sweep.yaml"
    out = tmp_path / "out"
    # the run must not inherit an ignored SIGINT (pytest started as a background job, `cmd &`,
    # ignores it, and so would the run: it then ran to the end, exit 0)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "robustedge.cli", "-v", "run", str(recipe), "--out", str(out)]
            + ["--executor", "ray", "--ray-cpus", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},  # lines as printed
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "running] student-" in line:
            break
    # Ctrl-C while a student runs (its Ray worker, below the run's process, is titled so)
    wait_for_task(proc.pid, ("student-",), lambda: proc.poll() is None)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("Ctrl-C did not stop the Ray run") from None
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "aborted"
    assert "ray: a local instance with 2 CPU(s)" in err  # --ray-cpus sized the instance
    finished = records(out)
    summary = run(recipe, out, ExecutorSpec())
    status = {x["id"]: x["status"] for x in summary["stages"]}
    assert all(status[sid] == "cached" for sid in finished)
    assert all(x["status"] in ("done", "cached") for x in summary["stages"])


def test_resource_requests():
    def stage(kind, **config):
        return Stage(kind, kind, config, lambda: None, lambda: [])

    assert stage_resources(stage("compress", device="cuda")) == {"num_cpus": 1, "num_gpus": 1}
    assert stage_resources(stage("train", device="auto"), 0) == {"num_cpus": 1, "num_gpus": 0}
    assert stage_resources(stage("train"), 4)["num_gpus"] == 1  # auto on a GPU cluster
    assert stage_resources(stage("train", device="cpu"), 4)["num_gpus"] == 0
    assert stage_resources(stage("evaluate", device="cuda"))["num_gpus"] == 0
    assert stage_resources(stage("bench")) == {"num_cpus": 0.5, "num_gpus": 0}


def test_unknown_executor_and_address_without_ray():
    with pytest.raises(ValueError, match="unknown executor"):
        ExecutorSpec("dask")
    with pytest.raises(ValueError, match="--address needs --executor ray"):
        ExecutorSpec("local", address="auto")
    for kind, address in (("local", None), ("ray", "auto")):  # --ray-cpus would do nothing
        with pytest.raises(ValueError, match="--ray-cpus needs --executor ray without --address"):
            ExecutorSpec(kind, address=address, num_cpus=2)


# ---------------------------------------------------------------- the local executor (fleets)
def _stage(sid, root: Path, body, kind="bench", lock=None, upstream=()):
    path = root / f"{sid}.txt"

    def execute():
        body()
        path.write_text(sid)

    return Stage(sid, kind, {"id": sid}, execute, lambda: [path], upstream=upstream, lock=lock)


def test_bench_stages_of_different_boards_run_at_once(tmp_path):
    """Two targets' bench stages overlap: each waits for the other to have started."""
    started = {"a": threading.Event(), "b": threading.Event()}

    def waits_for(me, other):
        def body():
            started[me].set()
            if not started[other].wait(timeout=30):
                raise RuntimeError(f"{me} ran alone: the fleet was benched one by one")

        return body

    stages = [
        _stage("export", tmp_path, lambda: None, kind="export"),
        _stage("bench-a", tmp_path, waits_for("a", "b"), lock="t:a", upstream=("export",)),
        _stage("bench-b", tmp_path, waits_for("b", "a"), lock="t:b", upstream=("export",)),
    ]
    results = run_stages(StageRunner(tmp_path), stages)
    assert [r.status for r in results] == ["done", "done", "done"]


def test_one_board_never_benches_two_models_at_once(tmp_path):
    inside, overlap = threading.Lock(), []

    def body():
        if not inside.acquire(blocking=False):
            overlap.append(True)
            return
        time.sleep(0.2)
        inside.release()

    stages = [_stage(f"bench-{i}", tmp_path, body, lock="t:same") for i in range(3)]
    run_stages(StageRunner(tmp_path), stages)
    assert not overlap


def test_failure_lets_running_stages_finish_and_records_them(tmp_path):
    gate = threading.Event()

    def fails():
        gate.wait(timeout=30)
        raise RobustEdgeError("board unplugged")

    def slow_ok():
        gate.set()
        time.sleep(0.3)

    runner = StageRunner(tmp_path)
    stages = [
        _stage("bench-bad", tmp_path, fails, lock="t:1"),
        _stage("bench-ok", tmp_path, slow_ok, lock="t:2"),
        _stage("later", tmp_path, lambda: None, kind="export", upstream=("bench-ok",)),
    ]
    with pytest.raises(RobustEdgeError, match="board unplugged"):
        schedule(runner, stages, LocalBackend())
    assert runner.results["bench-ok"].status == "done"
    assert runner.record_path("bench-ok").is_file()
    assert not runner.record_path("bench-bad").exists() and "later" not in runner.results


def test_skip_stage_in_a_thread_is_recorded_as_skipped(tmp_path):
    def skip():
        raise SkipStage("no board here")

    results = run_stages(StageRunner(tmp_path), [_stage("bench-x", tmp_path, skip)])
    assert results[0].status == "skipped" and results[0].note == "no board here"
