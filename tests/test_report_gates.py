"""The report's gates section: the verdicts a recipe's gates wrote (gates.json) appear in the
HTML and Markdown report, failures first, with the measured value and the threshold."""

from __future__ import annotations

import shutil

import pytest

from _recipe_run import recipe_run
from robustedge.gates import check
from robustedge.io import write_json
from robustedge.report import build_report
from robustedge.report.gates import GATES_FILE


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_run):
    return recipe_run(tmp_path_factory, tiny_run)


def test_report_shows_the_recipe_gates(done, tmp_path):
    out = tmp_path / "recipe"
    shutil.copytree(done, out)
    result = check([out], ["clean>=0.01", "clean>=0.999"])  # one holds, one cannot
    write_json(out / GATES_FILE, result.to_dict())
    n_fail = len(result.failures)
    assert 0 < n_fail < len(result.outcomes)
    rep = build_report([out], tmp_path / "report.html")
    html, md = rep.html_path.read_text(), rep.md_path.read_text()
    assert "<h2>Gates</h2>" in html and "clean&gt;=0.999" in html
    section = md[md.index("## Gates") :].split("\n## ")[0]
    rows = [x for x in section.splitlines() if x.startswith("| FAIL") or x.startswith("| pass")]
    assert len(rows) == len(result.outcomes)
    assert rows[0].startswith("| FAIL") and ">= 0.999" in rows[0]  # failures first
    assert sum(r.startswith("| FAIL") for r in rows) == n_fail


def test_no_gates_no_section(done, tmp_path):
    rep = build_report([done], tmp_path / "report.html")  # the recipe has no gates: section
    assert "## Gates" not in rep.md_path.read_text()
    assert "<h2>Gates</h2>" not in rep.html_path.read_text()
