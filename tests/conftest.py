"""Shared fixtures: the digits data set and one quickly trained tiny run folder."""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from subprocess import CompletedProcess
from typing import Callable, Sequence

import numpy as np
import pytest
import torch

from hostile_kit import Sandbox

# One thread: on a loaded 2-core machine torch's intra-op threads thrash (50x slower steps).
torch.set_num_threads(1)


def skip_unless_installed(*modules: str, reason: str = "") -> None:
    """Skip the calling test module when one of ``modules`` is not installed. Unlike
    ``pytest.importorskip`` it imports nothing: importing onnx2tf (TensorFlow) or torchattacks
    at collection costs every worker seconds of CPU before any test runs."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(reason or f"needs {', '.join(missing)}", allow_module_level=True)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` built by ``build(folder)`` once per test session and shared by the
    pytest-xdist workers: the first worker to ask builds it under a lock, in the temp root all
    workers share (each worker's base temp is a child of it); the others wait and reuse it. A
    build that raised is redone by the next caller. Only for folders the tests read (a test
    that changes one works on its own copy)."""
    root = shared_root(tmp_path_factory)
    out, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            done.touch()
    return out


def shared_root(tmp_path_factory) -> Path:
    """The temp folder every pytest-xdist worker of this session shares."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def pytest_configure(config) -> None:
    """onnx2tf conversions are cached by content in a folder of this session only (empty at
    the start, removed at the end): a model converted twice converts once, and no run of the
    suite reads a conversion made by an earlier one. Set here, before test modules are imported
    and pytest-xdist starts its workers, so that every worker and subprocess inherits it. An
    explicit ROBUSTEDGE_CACHE_TFLITE (``off``, or a folder) is left as it is.

    The session's first process (pytest-xdist's controller, or pytest without workers) starts
    one fork server preloaded with TensorFlow and onnx2tf (tests/cli_fork_server.py) and points
    ROBUSTEDGE_CONVERTER_PYTHON at it, for the workers too (each call is forked by a handler of
    its own, so calls may overlap): a conversion then starts in milliseconds instead of about
    5 s of CPU, and converts to the same bytes. An explicit one is left as it is."""
    from robustedge.cache import kind_env
    from robustedge.export.convert_cache import KIND
    from robustedge.export.tflite import CONVERTER_PYTHON_ENV

    if kind_env(KIND) not in os.environ:
        folder = tempfile.mkdtemp(prefix="robustedge-conversions-")
        os.environ[kind_env(KIND)] = config.robustedge_conversions = folder
    first = not hasattr(config, "workerinput")
    if first and CONVERTER_PYTHON_ENV not in os.environ and not config.option.collectonly:
        from cli_fork_server import ForkServer

        config.robustedge_converter = ForkServer("python", wait=False)
        os.environ[CONVERTER_PYTHON_ENV] = str(config.robustedge_converter.command)


def pytest_unconfigure(config) -> None:
    folder = getattr(config, "robustedge_conversions", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
    server = getattr(config, "robustedge_converter", None)
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def digits():
    from robustedge.data import load_dataset

    return load_dataset("digits")


SMALL_DIGITS = (192, 32)  # training and test images of ``small_digits``


@pytest.fixture(scope="session")
def small_digits(tmp_path_factory, digits) -> str:
    """Digits cut to 192 training and 32 test images, as an npz file (the option-effect tests:
    a whole run in a fraction of a second)."""
    n_train, n_test = SMALL_DIGITS
    path = tmp_path_factory.mktemp("small") / "digits192.npz"
    np.savez(
        path,
        x_train=digits.x_train[:n_train],
        y_train=digits.y_train[:n_train],
        x_test=digits.x_test[:n_test],
        y_test=digits.y_test[:n_test],
    )
    return str(path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny CNN trained naturally on digits for 3 epochs (a few seconds); trained once per
    session and read by every worker."""
    return built_once(tmp_path_factory, "tiny-run", _train_tiny_run) / "tiny"


def _train_tiny_run(folder: Path) -> None:
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    cfg = TrainConfig(model="tiny", adversary="none", eps=0.1, epochs=3, lr=1e-2, seed=0)
    train_run(cfg, folder / "tiny")


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, digits):
    """(model, x_test, y_test): the tiny CNN naturally trained 8 epochs on digits (seed 0), in
    eval mode; shared by the attack test modules (each takes its own slice of the test set).
    Trained once per session; each worker loads the weights."""
    from safetensors.torch import load_file

    folder = built_once(tmp_path_factory, "trained-tiny", lambda f: _train_tiny(f, digits))
    model = _tiny_model(digits)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    model.eval()
    return model, torch.from_numpy(digits.x_test), torch.from_numpy(digits.y_test)


def _tiny_model(digits):
    from robustedge.models import ModelSpec, build_model

    return build_model(ModelSpec("tiny", digits.input_shape, digits.num_classes))


def _train_tiny(folder: Path, digits) -> None:
    from safetensors.torch import save_file

    from robustedge.training import build_adversary, epoch_batches, fit

    torch.manual_seed(0)
    model = _tiny_model(digits)
    x_tr, y_tr = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    fit(model, epoch_batches(x_tr, y_tr, 64, seed=0), build_adversary("none"), opt, epochs=8)
    save_file(model.state_dict(), str(folder / "model.safetensors"))


@pytest.fixture(scope="session")
def device_export(tiny_run, tmp_path_factory) -> Path:
    """``tiny_run`` exported to onnx + tflite-int8 once per session (shared by the device tests
    of every worker; they only read it)."""
    return (
        built_once(tmp_path_factory, "device-export", lambda f: _export_tiny(tiny_run, f)) / "run"
    )


def _export_tiny(tiny_run: Path, folder: Path) -> Path:
    from robustedge.export import ExportConfig, export_run

    run = folder / "run"
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


START_PYTHONPATH = os.environ.get("PYTHONPATH")  # before any test changes it


class CliZygote:
    """The client of tests/cli_zygote.py: one preloaded process per pytest worker, started on
    first use, that forks each `robustedge` call (see that module for why and how)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def start(self) -> subprocess.Popen:
        """The zygote, started on first use with the PYTHONPATH this worker started with (a
        test's own PYTHONPATH, set when it happens to make the first call, would otherwise stay
        on the zygote's sys.path and reach every later call)."""
        if self.proc is None or self.proc.poll() is not None:
            code = f"import runpy; runpy.run_path({str(ZYGOTE)!r}, run_name='__main__')"
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env.update({"PYTHONPATH": START_PYTHONPATH} if START_PYTHONPATH is not None else {})
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ZYGOTE.parent,
                env=env,
            )
            atexit.register(self.stop, self.proc)
        return self.proc

    def restart(self) -> None:
        """Stop the zygote; the next call starts a new one."""
        if self.proc is not None:
            self.stop(self.proc)
            self.proc = None

    @staticmethod
    def stop(proc: subprocess.Popen) -> None:
        """End the zygote and reap it, so that its CPU time (and its children's, which it
        reaped) counts in this process's RUSAGE_CHILDREN like a subprocess's would."""
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def reply(self, proc: subprocess.Popen, word: str, deadline: float, pid: int = 0) -> int:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else ""
        if not line.startswith(word + " "):
            if pid:
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            raise RuntimeError(f"the CLI zygote gave {line!r} instead of {word!r}")
        return int(line.split()[1])

    def run(self, args: Sequence[str], cwd: Path | None, timeout: float) -> CompletedProcess:
        with self.lock, tempfile.TemporaryDirectory() as tmp:
            proc = self.start()
            out, err = Path(tmp) / "out", Path(tmp) / "err"
            req = dict(argv=list(args), cwd=str(cwd or os.getcwd()), env=dict(os.environ))
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({**req, "out": str(out), "err": str(err)}) + "\n")
            proc.stdin.flush()
            deadline = time.monotonic() + timeout
            pid = self.reply(proc, "pid", deadline)
            try:
                rc = self.reply(proc, "rc", deadline, pid)
            except RuntimeError:
                raise subprocess.TimeoutExpired(["robustedge", *args], timeout) from None
            argv = [sys.executable, "-m", "robustedge.cli", *args]
            return CompletedProcess(argv, rc, out.read_text(), err.read_text())


ZYGOTE = Path(__file__).with_name("cli_zygote.py")
ZYGOTE_CLIENT = CliZygote()


def run_cli(*args: str, cwd: Path | None = None) -> CompletedProcess:
    """Run `robustedge ARGS` as a user would: a process of its own (forked from one that has
    imported robustedge.cli and nothing else), in the caller's folder and environment."""
    return ZYGOTE_CLIENT.run(args, cwd, timeout=600)


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
# (`test_device.device_export` / `bundle`, session-scoped). Modules run in file-name order, which
# mixes the multi-process modules (VM, DDP, Ray, CI templates) with light ones. Longest first was
# measured slower (docs/testing.md): `--dist load` hands each worker a contiguous first chunk, so
# one worker got every long module; with small chunks the long modules ran side by side and
# their processes competed for the two cores.
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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = XDIST_GROUPS.get(item.module.__name__)
        if group is not None and config.pluginmanager.hasplugin("xdist"):
            item.add_marker(pytest.mark.xdist_group(group))
