"""Flash budgets: the calibrated estimate, the structure chosen, the student's export measured
against the budget, and the refusal of a budget nothing can meet."""

from __future__ import annotations

import pytest
import torch

from robustedge.compress import CompressConfig
from robustedge.compress.budget import (
    CHANNELS,
    FLASH_MARGIN,
    SPARSITY_GRID,
    WEIGHTS,
    Budget,
    FlashStrategy,
    SearchResult,
    Teacher,
    compress_to_budget,
    search_flash,
    student_config,
)
from robustedge.compress.budget.flash import (
    compressed_weight_bytes,
    flash_estimate,
    int8_stream,
    sparse_copy,
    stored_weights,
)
from robustedge.compress.budget.search import shrunk_copy
from robustedge.compress.targets import global_sparsity, prunable_params
from robustedge.io import read_json
from robustedge.models import ModelSpec, build_model
from robustedge.recipe.budget_measures import BoardMeasures

SHAPE = (1, 8, 8)
MEASURES = BoardMeasures()  # the bundle's codec, real exports
PACK = MEASURES.pack


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    return build_model(ModelSpec("lenet5", SHAPE, 10)).eval()


def test_int8_stream_holds_every_weight_once_and_compresses_zeros(lenet):
    weights = sum(m.weight.numel() for m in lenet.modules() if hasattr(m, "weight"))
    channels = 6 + 16 + 120 + 84 + 10
    assert len(int8_stream(lenet)) == weights + (4 + 4 + 8) * channels
    half, most = sparse_copy(lenet, 0.5), sparse_copy(lenet, 0.9)
    assert global_sparsity(prunable_params(most).values()) == pytest.approx(0.9, abs=1e-4)
    assert stored_weights(lenet) > stored_weights(half) > stored_weights(most)
    sizes = [compressed_weight_bytes(m, PACK) for m in (lenet, half, most)]
    assert sizes[0] > sizes[1] > sizes[2]  # zeros are what the codec takes out
    narrow, _ = shrunk_copy(lenet, SHAPE, 0.5)
    assert compressed_weight_bytes(narrow, PACK) < sizes[0]
    assert stored_weights(lenet) == weights  # copies were pruned, not the model


@pytest.mark.parametrize("fraction", [0.97, 0.6])
def test_search_keeps_the_structure_storing_most_weights_within_the_budget(lenet, fraction):
    fixed = 1500.0
    teacher_kib = flash_estimate(fixed, PACK)(lenet)
    budget = Budget.parse(f"flash_kb={teacher_kib * fraction:.4f}")
    r = search_flash(lenet, SHAPE, budget, fixed, PACK)
    assert r.budget == budget and r.teacher_value == teacher_kib
    assert r.value <= budget.limit * (1 - FLASH_MARGIN)  # the margin is held back
    kept, predicted = r.choice["stored_weights"], r.choice["predicted_kib"]
    assert set(kept) == {CHANNELS, WEIGHTS}  # both ways were searched and are recorded
    assert r.structure == max(kept, key=lambda k: (kept[k], k == CHANNELS))
    assert predicted[r.structure] == r.value
    if r.structure == CHANNELS:
        student, _ = shrunk_copy(lenet, SHAPE, r.channel_sparsity)
    else:
        student = sparse_copy(lenet, r.weight_sparsity)
    assert (
        flash_estimate(fixed, PACK)(student) == r.value
        and stored_weights(student) == kept[r.structure]
    )
    # one grid step less of either kind does not fit
    wider, _ = shrunk_copy(lenet, SHAPE, max(0.0, r.channel_sparsity - 1 / 64))
    assert r.channel_sparsity == 0 or flash_estimate(fixed, PACK)(wider) > budget.limit * 0.97
    d = r.to_dict()
    assert d["structure"] == r.structure and d["choice"]["margin"] == FLASH_MARGIN


def test_teacher_within_the_budget_is_kept_whole(lenet):
    r = search_flash(lenet, SHAPE, Budget.parse("flash_kb=1000"), 1500.0, PACK)
    assert (r.structure, r.channel_sparsity, r.weight_sparsity) == (CHANNELS, 0.0, 0.0)


def test_student_config_follows_the_structure_found(tiny_run):
    cfg = CompressConfig(teacher=str(tiny_run), structured=True, epochs=1)
    budget = Budget.parse("flash_kb=2")
    by_weights = student_config(cfg, SearchResult(budget, 0.0, 1.0, 2.0, [], 0.42))
    assert (by_weights.structured, by_weights.scope.value, by_weights.sparsity) == (
        False,
        "global",
        0.42,
    )
    by_channels = student_config(cfg, SearchResult(budget, 0.25, 1.0, 2.0))
    assert (by_channels.structured, by_channels.scope.value, by_channels.sparsity) == (
        True,
        "layer",
        0.25,
    )


def test_impossible_flash_budget_is_one_line_before_anything_is_exported(tiny_run, tmp_path, cli):
    out = tmp_path / "o"
    r = cli(
        "compress",
        "--teacher",
        str(tiny_run),
        "--epochs",
        "1",
        "--budget",
        "flash_kb=0.05",
        "--out",
        str(out),
    )
    assert r.returncode != 0 and "budget flash_kb=0.05 cannot be met" in r.stderr, r.stderr
    assert f"{(SPARSITY_GRID - 1) / SPARSITY_GRID:.0%} of weights zeroed" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_flash_budget_is_met_by_the_measured_bytes_of_the_export(tiny_run, tmp_path):
    """Two real exports (teacher, student): the limit lies below the teacher's measured bytes
    and the student's measured bytes lie under it."""
    out = tmp_path / "budget"
    cfg = CompressConfig(
        teacher=str(tiny_run), adversary="fgsm", epochs=1, finetune_epochs=1, batch_size=128
    )
    limit_kib = 2.3
    budget = Budget.parse(f"flash_kb={limit_kib}")
    m = compress_to_budget(cfg, budget, out, MEASURES, eval_attacks=("fgsm",))
    b = m["budget"]
    measured, teacher = b["measured"], b["teacher_measured"]
    assert teacher["flash_bytes"] > limit_kib * 1024  # the budget asks for a smaller file
    assert b["met"] and measured["flash_bytes"] <= limit_kib * 1024
    assert b["student"] == measured["flash_bytes"] / 1024
    assert measured["format"] == "tflite-int8" and measured["flash_codec"] == "xz"
    assert measured["flash_bytes"] < measured["model_bytes"]  # stored compressed
    assert len(measured["sha256"]) == 64 and measured["sha256"] != teacher["sha256"]
    assert b["tries"][-1]["measured"] == b["student"]
    assert m["structured"] == (b["structure"] == CHANNELS)
    assert read_json(out / "metrics.json")["budget"] == b  # recorded with the run


class FakeExports:
    """Flash measures without exporting: the teacher's file is its compressed int8 weights plus
    ``fixed`` bytes; a student's is the same plus ``extra[k]`` bytes on its k-th measurement
    (what the estimate missed), recorded in ``students``."""

    def __init__(self, fixed: float, extra=(0,)):
        self.fixed, self.extra, self.students = fixed, list(extra), []

    def pack(self, raw: bytes) -> bytes:
        return PACK(raw)

    def model_flash(self, model, spec, data_name, data_dir):
        flash = compressed_weight_bytes(model, PACK) + self.fixed
        return {"format": "tflite-int8", "flash_bytes": int(flash), "model_bytes": 10**6}

    def run_flash(self, run):
        from robustedge.models import load_model

        student, _ = load_model(run)
        k = min(len(self.students), len(self.extra) - 1)
        flash = int(compressed_weight_bytes(student, PACK) + self.fixed + self.extra[k])
        self.students.append(flash)
        return {"format": "tflite-int8", "flash_bytes": flash, "model_bytes": 10**6, "how": "x"}


def test_flash_retry_widens_the_estimate_by_the_excess_measured(lenet, tmp_path):
    """Teacher calibrated at 1500 B around its weights; a student measured 256 B (0.25 KiB)
    over its prediction moves the estimate's fixed part to 1500 + 256 = 1756 B, and the next
    search aims with it."""
    budget = Budget.parse("flash_kb=10")
    exports = FakeExports(1500.0, extra=(256,))
    teacher = Teacher(lenet, None, "digits", None, SHAPE)
    s = FlashStrategy(budget, teacher, exports)
    assert s.aim() == {}  # flash records predicted / measured per try, no margin
    s.prepare()
    assert s.fixed == 1500.0  # teacher's measured flash bytes less its compressed weights
    first = s.search()
    assert first.choice["fixed_bytes"] == 1500.0 and first.value <= 10 * (1 - FLASH_MARGIN)
    # a student with exactly the predicted weights, measured with 256 B the estimate missed
    exports.run_flash = lambda run: {"flash_bytes": int(first.value * 1024) + 256}
    measured = s.measure_student(tmp_path)
    assert measured == first.value + 0.25
    assert s.widen(first, measured) is True and s.fixed == 1756.0
    second = s.search()
    assert second.choice["fixed_bytes"] == 1756.0
    assert second.value <= 10 * (1 - FLASH_MARGIN) and second.value < first.value
    narrower = _student_of(lenet, second)
    assert second.value == flash_estimate(1500.0, PACK)(narrower) + 0.25
    assert s.measure(narrower) == second.value  # the strategy measures with the corrected part


def _student_of(model, r):
    if r.structure == CHANNELS:
        return shrunk_copy(model, SHAPE, r.channel_sparsity)[0]
    return sparse_copy(model, r.weight_sparsity)


def test_flash_student_over_its_budget_is_trained_again_with_the_estimate_corrected(
    tiny_run, tmp_path
):
    """The real training loop on fake exports: the first student measures 400 B more than its
    weights plus the calibrated part (over the budget), the second search adds the excess
    recorded in the first try to the estimate's fixed part, and its student fits."""
    cfg = CompressConfig(
        teacher=str(tiny_run), adversary="none", epochs=1, finetune_epochs=1, batch_size=128
    )
    exports = FakeExports(1000.0, extra=(400, 0))
    m = compress_to_budget(cfg, Budget.parse("flash_kb=2"), tmp_path / "s", exports, ("fgsm",))
    b = m["budget"]
    first, second = b["tries"]
    assert first["measured"] > 2.0 >= second["measured"] == b["student"]
    assert [t["measured"] * 1024 for t in b["tries"]] == exports.students
    excess = (first["measured"] - first["predicted"]) * 1024
    assert b["choice"]["fixed_bytes"] == pytest.approx(1000.0 + excess)
    assert second["predicted"] < first["predicted"] and b["met"]
    assert b["measured"]["how"] == "x" and b["teacher_measured"]["flash_bytes"] > 1000
    assert read_json(tmp_path / "s" / "metrics.json")["budget"] == b
