"""docs/results.md and README.md's headline table are generated from benchmarks/measured/*.json:
the committed pages must equal the generator's output, so no figure can drift from its JSON."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_results", ROOT / "scripts/gen_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_pages_equal_the_generated_ones(gen, capsys):
    code = gen.main(["--check"])
    assert code == 0, capsys.readouterr().err + " (run: python scripts/gen_results.py)"


def test_every_measurement_has_a_section_with_its_provenance(gen):
    page = (ROOT / "docs/results.md").read_text()
    for path in sorted((ROOT / "benchmarks/measured").glob("*.json")):
        assert f"### `{path.name}`" in page, path.name
        section = page.split(f"### `{path.name}`", 1)[1].split("\n### ", 1)[0]
        assert "Measured " in section and "hardware: " in section and "commit: `" in section
        assert "commit: `not recorded`" not in section, path.name


def test_a_changed_measurement_changes_the_page(gen, tmp_path, monkeypatch):
    """Editing a number in a JSON must show on the page and in README's table (so --check
    fails until the pages are regenerated)."""
    measured = tmp_path / "measured"
    shutil.copytree(ROOT / "benchmarks/measured", measured)
    demo = json.loads((measured / "demo_student.json").read_text())
    demo["host"]["worst"] = 0.5123
    (measured / "demo_student.json").write_text(json.dumps(demo))
    prov = json.loads((ROOT / "benchmarks/provenance.json").read_text())
    before = gen.results_page(prov), gen.readme_block()
    monkeypatch.setattr(gen, "MEASURED", measured)
    after = gen.results_page(prov), gen.readme_block()
    assert before[0] != after[0] and before[1] != after[1]
    assert "| 51.2 |" in after[0] and "worst case 51.2 %" in after[1]
    # and its recorded commit no longer holds it: --check asks for --stamp after a commit
    assert gen.unstamped(prov) == ["demo_student.json"]


def test_formatting_by_hand(gen):
    import results_render as render  # on sys.path once gen_results is loaded

    assert render.pct(0.75555) == "75.6" and render.pct(0.7555, 0.00444) == "75.5 ± 0.4"
    assert render.pct(None) == "-" and render.num(12501632) == "12,501,632"
    assert (
        render.cell("worst_std", 0.00444) == "0.4" and render.cell("seconds", 0.00444) == "0.00444"
    )
    assert render.cell("model", "/tmp/cb/models/a.tflite") == "a.tflite"
    assert render.attack_name({"name": "pgd", "steps": 20, "restarts": 5}) == "PGD-20x5"
    assert render.attack_name({"name": "apgd-ce", "steps": 100, "restarts": 1}) == "APGD-CE-100"
    d = {"cells": [{"method": "a", "sparsity": 0.9, "worst": 0.70},
                   {"method": "b", "sparsity": 0.9, "worst": 0.655},
                   {"method": "a", "sparsity": 0.99, "worst": 0.40}]}  # fmt: skip
    assert gen._gaps(d, "a", "b") == "+4.5 points at 90 % sparsity"
    verdicts = {"targets": {"0.99": {"gap_points": 2.84, "best_baseline": "gmp"},
                            "0.9": {"gap_points": -0.04, "best_baseline": "admm"}}}  # fmt: skip
    assert gen._best_gaps(verdicts) == "-0.0 (admm) / +2.8 (gmp) points at 90 / 99 % sparsity"
    seeds = {"cells": [{"method": "default", "n": 3}, {"method": "harp", "n": 3},
                       {"method": "admm", "n": 2}]}  # fmt: skip
    assert gen._seed_counts(seeds) == "default 3 seeds, baselines 2-3"
    assert gen._seed_counts({"cells": seeds["cells"][:2]}) == "default 3 seeds, baselines 3"
    assert gen.anchor("Compression trade-off (digits)") == (
        "docs/results.md#compression-trade-off-digits"
    )


def test_the_readme_anchors_exist(gen):
    page = (ROOT / "docs/results.md").read_text()
    headings = {gen.anchor(line[3:]) for line in page.splitlines() if line.startswith("## ")}
    for row in gen.headline_rows():
        link = row[-1].split("](", 1)[1].rstrip(")")
        assert link in headings, link


def test_readme_is_one_short_screenful():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, len(lines)
