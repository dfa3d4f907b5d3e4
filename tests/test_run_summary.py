"""`robustedge run` ends with the board payoff: which students beat the teacher on the board,
by how much, and their robust accuracy against the teacher's (the report's own lines)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from _recipe_run import copy_run, recipe_run, write_recipe
from conftest import run_cli
from robustedge.recipe.payoff import board_summary
from robustedge.report.build import beats_teacher_lines
from robustedge.report.collect import find_runs


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_run):
    return recipe_run(tmp_path_factory, tiny_run)


def test_run_prints_who_beats_the_teacher_on_the_board(done, tiny_run, tmp_path):
    out = copy_run(done, tmp_path / "out")
    recipe = write_recipe(tmp_path / "tiny.yaml", tiny_run)
    r = run_cli("run", str(recipe), "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "0 stage(s) run" in r.stdout  # everything cached: the summary is read back from JSON
    want = beats_teacher_lines(find_runs([out]))
    assert want and want[0].startswith("board: students that beat the teacher")
    start = lines.index(want[0])
    assert lines[start : start + len(want)] == want
    assert lines[start + len(want)] == f"output folder: {out}"
    # the numbers are the board's: a student's flash bytes against the teacher's, same target
    results = {
        p.parent.parent.parent.name: json.loads(p.read_text())
        for p in out.glob("**/device/local/results.json")
    }
    t_flash = results["teacher"]["flash_bytes"]
    flash_wins = [x for x in want if "flash bytes" in x]
    assert flash_wins, want
    for line in flash_wins:
        student = line.split()[0]
        s_flash = results[student]["flash_bytes"]
        assert f"flash bytes {s_flash:,} B vs {t_flash:,} B" in line and s_flash < t_flash
        assert re.search(
            r"robust \(pgd eps=0\.1\) [\d.]+% vs teacher [\d.]+% \([+-][\d.]+ pts\)", line
        )


def test_summary_without_board_results_or_runs(done, tmp_path):
    out = copy_run(done, tmp_path / "out")
    for p in out.glob("**/device"):
        shutil.rmtree(p)
    assert board_summary(out) == []  # no board stage: nothing to claim
    empty = tmp_path / "empty"
    empty.mkdir()
    (line,) = board_summary(empty)
    assert line.startswith("board: no summary (") and "\n" not in line


def test_summary_fits_one_screen(done, tmp_path):
    lines = board_summary(done, max_lines=2)
    assert len(lines) == 2 and lines[-1].startswith("  ... ") and "more" in lines[-1]
