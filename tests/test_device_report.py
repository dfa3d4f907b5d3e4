"""On-board robust figures in the report and the recipe: every figure in the device table names
its attacks and budgets, settings weaker than the default are labelled (from the results JSON
of a real recipe run), and a recipe can ask one board for less."""

from __future__ import annotations

import html
import json
import shutil

import pytest

from _recipe_run import RECIPE, recipe_run
from robustedge.report import build_report
from robustedge.report.build import board_robust_cells
from test_report import md_table

WORST = "robust % (on board, worst case)"


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_run):
    return recipe_run(tmp_path_factory, tiny_run)


def test_device_table_names_attacks_and_weaker_settings(done, tmp_path):
    """The shared recipe benches with Square-10 on 10 images: results and report say it is
    weaker than the default, and name PGD transfer and Square in every robust cell."""
    rep = build_report([done], tmp_path / "report.html")
    md, page = rep.md_path.read_text(), rep.html_path.read_text()
    dev = md_table(md, "On-device results", key=("model", "target"))
    for name, path in (("teacher", "teacher"), ("prox-s0.8", "students/prox-s0.8")):
        res = json.loads((done / path / "device/local/results.json").read_text())
        wc, (sq,) = res["worst_case"], res["robust"]
        n_total = res["n_eval"]["clean"]
        weaker = f"weaker than default: Square-10 on 10 of {n_total} images"
        assert wc["weaker"] == sq["weaker"] == weaker
        label = "worst of PGD-2 transfer and Square-10 on-board, eps 0.1, 10 images"
        assert wc["label"] == label and wc["attacks"] == ["PGD-2 transfer", "Square-10 on-board"]
        row = dev[(name, "local")]
        assert row[WORST] == f"{100 * wc['acc']:.1f} ({label}); {weaker}"
        assert row["Square %"] == (
            f"{100 * sq['acc']:.1f} (Square-10 on-board, n=10 of {n_total}); {weaker}"
        )
        tr = res["accuracy"]["transfer"]
        assert row["transfer %"] == f"{100 * tr:.1f} (PGD-2 transfer, n={n_total})"
        assert html.escape(f"{label}; {weaker}") in page  # stated once, in the legend
    # no robust figure in the device table without an attack name
    for row in dev.values():
        for col in (WORST, "transfer %", "Square %"):
            assert row[col] == "-" or "PGD-" in row[col] or "Square-" in row[col], row[col]


def test_report_labels_results_without_worst_case(done, tmp_path):
    """Results written before the worst case existed (no name, no label): the report still
    names the Square budget, labels a weak one and shows no worst case; a default budget on
    every image carries no label."""
    out = tmp_path / "runs"
    shutil.copytree(done / "teacher", out / "teacher")
    path = out / "teacher/device/local/results.json"
    res = json.loads(path.read_text())
    n_total = res["n_eval"]["clean"]
    for key in ("worst_case",):
        res.pop(key)
    for key in ("name", "weaker", "restarts", "n_total"):
        res["robust"][0].pop(key)
    path.write_text(json.dumps(res))
    md = build_report([out], tmp_path / "r.html").md_path.read_text()
    row = md_table(md, "On-device results", key=("model", "target"))[("teacher", "local")]
    acc = 100 * res["robust"][0]["acc"]
    assert row[WORST] == "-"
    assert row["Square %"] == (
        f"{acc:.1f} (Square-10 on-board, n=10 of {n_total}); "
        f"weaker than default: Square-10 on 10 of {n_total} images"
    )
    res["robust"][0].update(n_queries=1000, n=n_total)
    _worst, _transfer, square = board_robust_cells(res)  # the table's cells for this row
    assert square == f"{acc:.1f} (Square-1000 on-board, n={n_total} of {n_total})"


def test_recipe_square_settings_per_board(tiny_run, tmp_path):
    """``devices:`` leaves square_n out (the whole set) by default; one board may ask for less;
    bad values are one-line errors naming the key."""
    from robustedge.errors import RobustEdgeError
    from robustedge.recipe import load_recipe

    text = RECIPE.format(teacher=tiny_run, margin=50.0)
    base = text[: text.index("devices:")]
    (tmp_path / "a.yaml").write_text(base + "devices:\n  targets: [local]\n")
    d = load_recipe(tmp_path / "a.yaml").devices
    assert (d.square_queries, d.square_n) == (1000, None)
    (tmp_path / "b.yaml").write_text(
        base + "devices:\n  targets:\n    - local\n"
        "    - {target: qemu-aarch64, optional: true, square_queries: 100, square_n: 50}\n"
    )
    local, qemu = load_recipe(tmp_path / "b.yaml").devices.targets
    assert (local.square_queries, local.square_n) == (None, None)  # inherits devices:
    assert (qemu.square_queries, qemu.square_n) == (100, 50)
    for bad, key in (("square_n: 0", "square_n"), ("square_queries: -1", "square_queries")):
        (tmp_path / "c.yaml").write_text(
            base + f"devices:\n  targets:\n    - {{target: local, {bad}}}\n"
        )
        with pytest.raises(RobustEdgeError, match=key) as e:
            load_recipe(tmp_path / "c.yaml")
        assert len(str(e.value).splitlines()) == 1
