"""The tests' `robustedge` calls (tests/cli_zygote.py, forked from a preloaded process) behave
as a new interpreter running ``python -m robustedge.cli`` does: the same output and exit
status, the caller's folder and environment, and nothing carried from one call to the next."""

from __future__ import annotations

import subprocess
import sys

from conftest import ZYGOTE_CLIENT, run_cli


def fresh(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robustedge.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_output_and_status_equal_a_new_interpreters():
    for args in (["--version"], ["train", "--model", "no-such-model"], ["no-such-command"]):
        got, want = run_cli(*args), fresh(*args)
        assert (got.returncode, got.stdout, got.stderr) == (
            want.returncode,
            want.stdout,
            want.stderr,
        )
    assert run_cli("train", "--model", "no-such-model").returncode == 2


def test_takes_the_callers_environment_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTEDGE_CACHE", str(tmp_path / "ci-cache"))
    got = run_cli("device", "cache-key", "--arch", "aarch64", "--path")
    assert got.returncode == 0 and got.stdout.strip() == str(
        tmp_path / "ci-cache" / "qemu" / "aarch64"
    )
    (tmp_path / "recipe.yaml").write_text("name: [unclosed\n")
    here, there = (
        run_cli("run", "recipe.yaml", cwd=tmp_path),
        fresh("run", "recipe.yaml", cwd=tmp_path),
    )
    assert here.returncode == there.returncode == 2 and here.stderr == there.stderr
    assert "recipe.yaml" in here.stderr


def test_a_user_module_on_pythonpath_is_importable_and_forgotten(monkeypatch, tmp_path):
    """A model factory on the caller's PYTHONPATH is found; the next call, without it, fails
    to import it like a new interpreter (the first call's import did not leak)."""
    (tmp_path / "zyg_factory.py").write_text(
        "def build(input_shape, num_classes):\n    raise ValueError('factory zyg ran')\n"
    )
    args = ("train", "--model", "zyg_factory:build", "--epochs", "1", "--out", str(tmp_path / "r"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    ZYGOTE_CLIENT.restart()  # the first call below starts the zygote, with this PYTHONPATH set
    first = run_cli(*args)
    assert first.returncode == 2 and "factory zyg ran" in first.stderr
    monkeypatch.delenv("PYTHONPATH")
    second, want = run_cli(*args, cwd=tmp_path.parent), fresh(*args, cwd=tmp_path.parent)
    assert second.returncode == want.returncode != 0
    assert second.stderr == want.stderr and "factory zyg ran" not in second.stderr
