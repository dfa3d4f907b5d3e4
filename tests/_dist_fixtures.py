"""Runs shared by tests/test_ddp.py and tests/test_multinode.py, each made once per test
session (``built_once``: shared by the pytest-xdist workers too; the tests only read them).

Every distributed test compares against a run of the same configuration; the two modules
used to train their own copies of the same references (a one-process LeNet-5, an
uninterrupted 2-process PGD-AT run) on data sets that differed only in size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

from conftest import built_once

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTEDGE_DIST_TIMEOUT": "120"}
TRAIN = ["--model", "lenet5", "--batch-size", "64", "--lr", "0.01", "--device", "cpu"]
N_TRAIN, N_TEST = 512, 64  # a multiple of 2 x 64 (no sampler padding); a short evaluation


@pytest.fixture(scope="session")
def dist_data(tmp_path_factory) -> str:
    """Digits cut to 512 training images (a multiple of 2 x 64: no sampler padding) and 64
    test images (a short final evaluation), as an npz file."""

    def build(folder: Path) -> None:
        from robustedge.data import load_dataset

        d = load_dataset("digits")
        np.savez(
            folder / "digits512.npz",
            x_train=d.x_train[:N_TRAIN],
            y_train=d.y_train[:N_TRAIN],
            x_test=d.x_test[:N_TEST],
            y_test=d.y_test[:N_TEST],
        )

    return str(built_once(tmp_path_factory, "dist-digits512", build) / "digits512.npz")


def one_process_config(data: str):
    """LeNet-5, natural training, 2 epochs of global batch 64 on ``data``, on the CPU."""
    from robustedge.training.config import TrainConfig

    return TrainConfig(
        data="npz",
        data_dir=data,
        model="lenet5",
        adversary="none",
        epochs=2,
        batch_size=64,
        lr=0.01,
        device="cpu",
    )


@pytest.fixture(scope="session")
def one_process(tmp_path_factory, dist_data) -> Path:
    """:func:`one_process_config` trained in one process: the reference that data-parallel
    runs of the same config must equal, and the teacher of the compress tests."""
    from robustedge.training.run import train_run

    def build(folder: Path) -> None:
        train_run(one_process_config(dist_data), folder / "run")

    return built_once(tmp_path_factory, "dist-one-process", build) / "run"


def pgd_args(data: str) -> List[str]:
    """`robustedge train` PGD-AT for 3 epochs on ``data`` (the resume tests' job)."""
    args = ["train", "--data", "npz", "--data-dir", data, *TRAIN, "--adversary", "pgd"]
    return args + ["--steps", "1", "--epochs", "3", "--no-progress"]


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, dist_data) -> Tuple[List[str], Path]:
    """(args, run folder): :func:`pgd_args` with 2 processes on one node, uninterrupted (the
    same 2 global ranks as two nodes of one process)."""
    args = pgd_args(dist_data)

    def build(folder: Path) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "robustedge.cli", *args, "--nproc", "2"]
            + ["--out", str(folder / "run")],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
        )
        assert r.returncode == 0, r.stderr

    return args, built_once(tmp_path_factory, "dist-pgd-uninterrupted", build) / "run"
