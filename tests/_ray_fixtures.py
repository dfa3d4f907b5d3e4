"""The sweep both Ray test modules run, and its serial run, built once per test session.

``test_ray.py`` runs it in-process on a local Ray instance, ``test_ray_cluster.py`` through
``robustedge run --executor ray --address`` on a two-node cluster; both compare with the same
serial run (``ray_sweep/serial``), built once and shared by the pytest-xdist workers
(:func:`conftest.built_once`). The sweep trains its own teacher on digits cut to
``SMALL_DIGITS`` images, as an npz file in the shared folder: every stage is a compute stage
of a fraction of a second, so what the tests pay for is Ray (its daemons, workers and their
imports), not the training. The recipe names the shared npz file by its path, which is part of
the stages' input hashes: a Ray run compared with the serial one must use ``sweep.yaml`` of
the shared folder (or :func:`sweep_recipe` of it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Tuple

import numpy as np

from conftest import SMALL_DIGITS, built_once

RECIPE = """\
name: sweep
seed: 0
data: {{name: npz, data_dir: {data}}}
teacher:
  train: {{model: tiny, adversary: none, epochs: 3, lr: 0.01}}
evaluate:
  attacks: [pgd]
  eps: [0.1]
  pgd_steps: 2
  restarts: 1
compress:
  - name: prox
    method: prox
    adversary: none
    eps: 0.0
    sparsity: [0.5, 0.8]
    epochs: 1
    finetune_epochs: 1
  - name: mag
    method: magnitude
    adversary: none
    eps: 0.0
    sparsity: [0.5]
    epochs: 1
    finetune_epochs: 0
{extra}"""
STAGES = 8  # teacher, 3 students, and an evaluation of each


def sweep_recipe(shared: Path, extra: str = "") -> str:
    """The sweep's YAML on the npz file of ``shared`` (the ``ray_sweep`` folder), with
    ``extra`` compress entries appended."""
    return RECIPE.format(data=shared / "digits-small.npz", extra=extra)


def serial_run(recipe: Path, out: Path) -> dict:
    """``recipe`` run in order in this process (the local executor)."""
    from robustedge.recipe import load_recipe
    from robustedge.recipe.executors import ExecutorSpec
    from robustedge.recipe.stages import run_recipe

    return run_recipe(load_recipe(recipe), out, executor=ExecutorSpec())


def shared_sweep(tmp_path_factory, digits) -> Path:
    """The shared folder, built once per session: ``digits-small.npz``, ``sweep.yaml`` and
    ``serial/`` (the sweep run in order: only read by the tests; one that runs on it works on
    a copy). ``digits``: the session's data set (conftest's fixture)."""

    def build(folder: Path) -> None:
        n_train, n_test = SMALL_DIGITS
        np.savez(
            folder / "digits-small.npz",
            x_train=digits.x_train[:n_train],
            y_train=digits.y_train[:n_train],
            x_test=digits.x_test[:n_test],
            y_test=digits.y_test[:n_test],
        )
        (folder / "sweep.yaml").write_text(sweep_recipe(folder))
        serial_run(folder / "sweep.yaml", folder / "serial")

    return built_once(tmp_path_factory, "ray-sweep", build)


def _parent(pid: int) -> int:
    """The parent of process ``pid`` (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def running_task(ancestor: int, prefixes: Tuple[str, ...]) -> int:
    """The pid of a Ray worker below process ``ancestor`` (a driver that started Ray, or a
    node's ``ray start``) that is running a task whose name starts with one of ``prefixes``:
    Ray titles a worker ``ray::<task name>`` while it runs a task (the executor names each
    task by its stage id). 0 when there is none."""
    titles = tuple(f"ray::{p}".encode() for p in prefixes)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if not cmdline.read_bytes().startswith(titles):
                continue
        except OSError:
            continue
        pid = up = int(cmdline.parent.name)
        while up > 1:
            up = _parent(up)
            if up == ancestor:
                return pid
    return 0


def wait_for_task(ancestor: int, prefixes: Tuple[str, ...], alive, timeout: float = 600) -> str:
    """:func:`running_task`, polled while ``alive()`` until such a task runs: its name."""
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        pid = running_task(ancestor, prefixes)
        try:
            if pid:
                return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0][5:].decode()
        except OSError:  # it has just ended
            pass
        time.sleep(0.02)
    raise AssertionError(f"no Ray task {prefixes} ever ran below process {ancestor}")
