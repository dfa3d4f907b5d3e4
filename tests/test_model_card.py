"""A model card next to every benched bundle of a recipe (issue 27): how the model was made,
its size, host and board accuracy with the attacks named, the parity gate, and its limits,
each figure equal to the JSON it was read from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _recipe_run import recipe_run


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_run) -> Path:
    return recipe_run(tmp_path_factory, tiny_run)


def test_card_next_to_each_bundle(done):
    for where in sorted(done.rglob("device/local")):
        assert (where / "bundle").is_dir() and (where / "MODEL_CARD.md").is_file(), where


def test_card_figures_come_from_the_json(done):
    run = done / "students/prox-s0.8"
    card = (run / "device/local/MODEL_CARD.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    res = json.loads((run / "device/local/results.json").read_text())
    onnx = json.loads((run / "export/export.json").read_text())["artifacts"]["onnx"]
    parity = onnx["parity"]
    assert card.startswith("# Model card: prox-s0.8\n")
    assert "Compressed from the teacher `teacher` by `prox`" in card
    assert f"{100 * metrics['sparsity']['global']:.1f} % of the prunable weights zeroed" in card
    assert f"Parameters {metrics['params']:,} ({metrics['nonzero_params']:,} non-zero)" in card
    macs = metrics["macs"]
    assert f"MACs {macs['nonzero']:,} on non-zero weights (dense {macs['dense']:,}" in card
    p50 = res["latency"]["p50_ms"]
    assert f"latency p50 / p99: {p50:.3g} / " in card
    assert f"clean {100 * metrics['clean_acc']:.1f} %" in card
    gate = "pass" if parity["passed"] else "FAIL"
    assert f"| onnx | {onnx['bytes']:,} | {gate}" in card
    # the board's robust figure names its attacks, budgets and images, and says it is weaker
    wc = res["worst_case"]
    assert f"{100 * wc['acc']:.1f} ({wc['label']}); {wc['weaker']}" in card
    assert f"flash {res['flash_bytes']:,} B (xz)" in card and "not emulated" in card
    # every single attack of the host evaluation named with its settings
    for r in metrics["robust"]:
        assert f"- {r['attack']} eps {r['eps']}" in card
    assert "Evaluated on the `digits` test split only" in card


def test_cards_follow_the_json_on_every_run(done, tmp_path):
    """Cards are derived data: a rerun with every stage cached writes them again from the
    current JSON (a deleted card comes back)."""
    import shutil

    from robustedge.recipe import load_recipe
    from robustedge.recipe.stages import run_recipe

    out = shutil.copytree(done, tmp_path / "out")
    card = out / "students/prox-s0.8/device/local/MODEL_CARD.md"
    before = card.read_text()
    card.unlink()
    summary = run_recipe(load_recipe(done.parent / "tiny.yaml"), out)
    assert {s["status"] for s in summary["stages"]} == {"cached"}
    assert card.read_text() == before


def test_teacher_card_says_it_is_dense(done):
    card = (done / "teacher/device/local/MODEL_CARD.md").read_text()
    assert "A dense model trained by `robustedge train`" in card
