"""Shared fixtures: the digits data set and one quickly trained tiny run folder."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

from hostile_kit import Sandbox

# One thread: on a loaded 2-core machine torch's intra-op threads thrash (50x slower steps).
torch.set_num_threads(1)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` built by ``build(folder)`` once per test session and shared by the
    pytest-xdist workers: the first worker to ask builds it under a lock, in the temp root all
    workers share (each worker's base temp is a child of it); the others wait and reuse it. A
    build that raised is redone by the next caller. Only for folders the tests read (a test
    that changes one works on its own copy)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def digits():
    from robustedge.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny CNN trained naturally on digits for 3 epochs (a few seconds)."""
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(model="tiny", adversary="none", eps=0.1, epochs=3, lr=1e-2, seed=0)
    train_run(cfg, out)
    return out


@pytest.fixture(scope="session")
def trained_tiny(digits):
    """(model, x_test, y_test): the tiny CNN naturally trained 8 epochs on digits (seed 0), in
    eval mode; shared by the attack test modules (each takes its own slice of the test set)."""
    from robustedge.models import ModelSpec, build_model
    from robustedge.training import build_adversary, epoch_batches, fit

    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", digits.input_shape, digits.num_classes))
    x_tr, y_tr = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    fit(model, epoch_batches(x_tr, y_tr, 64, seed=0), build_adversary("none"), opt, epochs=8)
    model.eval()
    return model, torch.from_numpy(digits.x_test), torch.from_numpy(digits.y_test)


@pytest.fixture(scope="session")
def device_export(tiny_run, tmp_path_factory) -> Path:
    """``tiny_run`` exported to onnx + tflite-int8 once per session (shared by device tests;
    defined here, not imported into each module, so it is built once per worker)."""
    from robustedge.export import ExportConfig, export_run

    run = tmp_path_factory.mktemp("device") / "run"
    shutil.copytree(tiny_run, run)
    export_run(run, ExportConfig(formats="onnx,tflite-int8", transfer_steps=5, transfer_restarts=1))
    return run


@pytest.fixture(scope="session")
def device_bundle(device_export, tmp_path_factory) -> Path:
    """The bundle of ``device_export`` (test_device.py names it ``bundle``)."""
    from robustedge.device.host.bundle import build_bundle

    return build_bundle(device_export, tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="session")
def device_host_ref(device_bundle):
    """``device_bundle`` on the host with the board's interpreter (tflite-runtime, reference
    kernels): what the emulated boards must reproduce (test_device_targets.py's ``host_ref``)."""
    from robustedge.device.host.targets import LocalTarget
    from test_device_targets import BENCH

    return LocalTarget().bench(device_bundle, [*BENCH, "--backend", "tflite-runtime"])


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `robustedge ARGS` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "robustedge.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A bundle built by the real builder from an export folder (artifact bytes are opaque)."""
    from hostile_kit import fake_int8_export
    from robustedge.device.host.bundle import build_bundle

    run = fake_int8_export(tmp_path / "run")
    return build_bundle(run, tmp_path / "bundle")


@pytest.fixture
def sb(tmp_path, capsys, monkeypatch) -> Sandbox:
    box = tmp_path / "sandbox"
    box.mkdir()
    monkeypatch.chdir(box)
    monkeypatch.delenv("ROBUSTEDGE_DATA_DIR", raising=False)
    return Sandbox(box, capsys)


@pytest.fixture
def run_copy(tiny_run, sb) -> Path:
    """A private copy of the session's tiny run folder, to be made hostile."""
    dst = sb.root / "run"
    shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns("export", "checkpoint"))
    return dst


# ---------------------------------------------------------------- xdist scheduling (make test)
# `make test` runs `pytest -n 2 --dist load` (a full run with loadgroup took 19 min wall on
# 2 idle cores, 1.1 cores busy on average: the device group serialised the long modules). Under
# `--dist loadgroup` (opt-in: PYTEST_ARGS) modules that share an expensive per-process
# fixture run on one worker, so it is built once instead of once per worker: the small recipe
# run (`_recipe_run.recipe_run`, cached per process) and the exported tiny model with its bundle
# (`test_device.device_export` / `bundle`, session-scoped). The longest modules are collected
# first (under xdist only) so that neither worker is left alone with a long test at the end.
XDIST_GROUPS = {
    "test_check_templates": "ci-templates",
    "test_recipe": "recipe-run",
    "test_report": "recipe-run",
    "test_device_report": "recipe-run",
    "test_device": "device-bundle",
    "test_device_targets": "device-bundle",
    "test_device_vm": "device-bundle",
    "test_device_config": "device-bundle",
    "test_bundle_compressed": "device-bundle",
}
LONGEST_FIRST = (
    "test_device_vm",
    "test_ddp",
    "test_device_targets",
    "test_resume",
    "test_ray",
    "test_crash",
    "test_recipe",
    "test_report",
    "test_device_report",
    "test_device",
    "test_bundle_compressed",
    "test_device_config",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    for item in items:
        group = XDIST_GROUPS.get(item.module.__name__)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    if getattr(config.option, "numprocesses", None):  # only under xdist (`-n N`)
        # stable: a module's tests stay together and in their order (module fixtures built once)
        items.sort(key=lambda it: rank.get(it.module.__name__, len(rank)))
