"""Budgets choose the shape: the greedy per-layer width search (one step checked by hand on
LeNet-5's MACs), its refusal of an impossible budget, the shape in the budget's text, and a
MACs budget trained end to end at the searched widths."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from robustedge.compress import CompressConfig
from robustedge.compress.budget import Budget, Shape, compress_to_budget, search_widths
from robustedge.compress.budget.measures import macs_measure
from robustedge.compress.budget.shape import GreedyShape, Sensitivity, shrunk_to
from robustedge.errors import RobustEdgeError
from robustedge.models import ModelSpec, build_model, count_macs, load_model

SHAPE = (1, 8, 8)


def lenet() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec("lenet5", SHAPE, 10)).eval()


def width_loss(model: nn.Module) -> float:
    """A stand-in robust loss read off the widths: 10, 5 and 3 per fraction of conv 3, fc 7
    and fc 9 removed."""
    return (
        10 * (1 - model[3].out_channels / 16)
        + 5 * (1 - model[7].out_features / 120)
        + 3 * (1 - model[9].out_features / 84)
    )


def test_one_greedy_step_by_hand():
    # LeNet-5 on 8x8: MACs 9600 (conv 0) + 38400 (conv 3) + 7680 (fc 7) + 10080 (fc 9) + 840
    model = lenet()
    state = GreedyShape(model, SHAPE, macs_measure(SHAPE), width_loss, (False, False), 1 / 8)
    assert state.value == 66600 and state.full == {"3": 16, "7": 120, "9": 84}
    # a move saves 1/8 of 66600 = 8325 MACs: per channel conv 3 saves 2400 + 480 (fc 7's four
    # inputs x 120), fc 7 64 + 84, fc 9 120 + 10; the fewest channels saving 8325 are 3
    # (8640), 57 (8436) and 65 (8450)
    assert state.need(limit=0.0) == 8325
    moves = {n: state.candidate(n, 8325) for n in state.widths}
    assert {n: m.widths[n] for n, m in moves.items()} == {"3": 13, "7": 63, "9": 19}
    assert {n: state.value - m.value for n, m in moves.items()} == {"3": 8640, "7": 8436, "9": 8450}
    # loss added per MAC of the saving needed: 10 * 3/16, 5 * 57/120, 3 * 65/84 over 8325
    assert moves["3"].score == pytest.approx(10 * 3 / 16 / 8325)
    assert moves["7"].score == pytest.approx(5 * 57 / 120 / 8325)
    assert moves["9"].score == pytest.approx(3 * 65 / 84 / 8325)
    assert state.step(limit=0.0)
    assert state.widths == {"3": 13, "7": 120, "9": 84} and state.value == 66600 - 8640
    assert count_macs(shrunk_to(model, SHAPE, state.widths), SHAPE)["dense"] == 57960
    # 960 MACs left above a limit of 57000: one conv 3 channel saves 2880 (scored on 960),
    # 8 fc 7 neurons save 8 x (52 + 84) = 1088, 8 fc 9 neurons 8 x 130 = 1040: fc 9 adds the
    # least loss (3 * 8/84 < 5 * 8/120 < 10/16) and the student lands 80 MACs under the limit
    assert state.need(limit=57000) == 960
    assert state.step(limit=57000) and state.widths == {"3": 13, "7": 120, "9": 76}
    assert state.value == 56920


def test_each_candidate_is_fine_tuned_before_its_loss_is_measured():
    """The recovery runs on every candidate (cut from the current student) before its loss is
    measured, and the chosen student keeps its fine-tuned weights."""
    seen = []

    def recover(student):
        seen.append((student[3].out_channels, student[7].out_features, student[9].out_features))
        with torch.no_grad():
            student[11].bias.fill_(float(len(seen)))  # marks which candidate this was

    state = GreedyShape(lenet(), SHAPE, macs_measure(SHAPE), width_loss, (False, False), 1 / 8)
    state.recover = recover
    assert state.step(limit=0.0)
    assert sorted(seen) == [(13, 120, 84), (16, 63, 84), (16, 120, 19)]  # each layer's move
    chosen = seen.index((13, 120, 84)) + 1  # the conv 3 move, fine-tuned as the mark'th
    assert float(state.model[11].bias[0].detach()) == chosen and state.model[3].out_channels == 13


def test_search_widths_meets_the_budget_and_refuses_the_impossible():
    model = lenet()
    found = search_widths(model, SHAPE, Budget("macs", 40000), macs_measure(SHAPE), width_loss)
    student = shrunk_to(model, SHAPE, found.widths)
    assert count_macs(student, SHAPE)["dense"] == found.value <= 40000
    assert found.to_dict()["shape"] == "layers" and found.layer_sparsity()["3"] < 1
    with pytest.raises(RobustEdgeError) as e:
        search_widths(model, SHAPE, Budget("macs", 100), macs_measure(SHAPE), width_loss)
    assert "\n" not in str(e.value) and "cannot be met by removing channels" in str(e.value)


def test_the_budget_text_names_its_shape():
    assert Budget.parse("flash_kb=4").shape is Shape.UNIFORM  # the default until measured
    assert Budget.parse("flash_kb=4, shape=layers").shape is Shape.LAYERS
    assert Budget.parse("macs=2M, shape=uniform").shape is Shape.UNIFORM
    assert Budget.parse("latency_ms=2", "local").shape is Shape.UNIFORM
    for bad in ("flash_kb=4,shape=round", "flash_kb=4,size=2", "flash_kb=4,shape=layers,x=1"):
        with pytest.raises(ValueError) as e:
            Budget.parse(bad)
        assert "\n" not in str(e.value)


def test_the_robust_sensitivity_is_a_pgd_loss(digits):
    model = lenet()
    x, y = torch.as_tensor(digits.x_train[:32]), torch.as_tensor(digits.y_train[:32]).long()
    sens = Sensitivity(x, y, eps=0.1, steps=3)
    with torch.no_grad():
        clean = float(nn.functional.cross_entropy(model(x), y))
    assert sens(model) > clean and sens(model) == sens(model)  # attacked, and repeatable


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    out = tmp_path_factory.mktemp("runs") / "lenet"
    train_run(TrainConfig(model="lenet5", adversary="none", epochs=2, lr=1e-2, seed=0), out)
    return out


@pytest.mark.parametrize("shape", ["layers", "uniform"])
def test_a_macs_budget_trains_the_searched_widths(lenet_run, tmp_path, shape, monkeypatch):
    from robustedge.compress.budget import shape as shape_search

    monkeypatch.setattr(shape_search, "RECOVERY_ITERS", 2)  # each candidate's fine-tune: short
    cfg = CompressConfig(
        teacher=str(lenet_run), method="magnitude", adversary="none", epochs=1,
        finetune_epochs=0, batch_size=128, lr=1e-2, steps=2,
    )  # fmt: skip
    m = compress_to_budget(cfg, Budget("macs", 40000, shape=shape), tmp_path / "s", None, ("fgsm",))
    b = m["budget"]
    assert b["met"] and b["student"] <= 40000 and b["shape"] == shape
    student, _ = load_model(tmp_path / "s")
    got = {"3": student[3].out_channels, "7": student[7].out_features, "9": student[9].out_features}
    if shape == "layers":
        assert got == b["widths"] and b["teacher_widths"] == {"3": 16, "7": 120, "9": 84}
    else:
        s = b["channel_sparsity"]  # one fraction for every layer
        assert "widths" not in b and got == {
            n: max(1, c - round(s * c)) for n, c in {"3": 16, "7": 120, "9": 84}.items()
        }
    assert count_macs(student, SHAPE)["dense"] == b["student"]


class GateMeasures:
    """Flash measures on the estimate itself (int8 weights under xz plus 1000 bytes) whose
    export gate answers ``passed``: the record's logic, without a TensorFlow export."""

    def __init__(self, passed: bool) -> None:
        self.passed = passed

    def pack(self, raw: bytes) -> bytes:
        import lzma

        return lzma.compress(raw)

    def size(self, model) -> int:
        from robustedge.compress.budget.flash import compressed_weight_bytes

        return compressed_weight_bytes(model, self.pack) + 1000

    def model_flash(self, model, spec, data_name, data_dir):
        return {"format": "estimate", "flash_bytes": self.size(model)}

    def run_flash(self, run):
        model, _ = load_model(run)
        return {"format": "estimate", "flash_bytes": self.size(model), "parity": self.passed}


@pytest.mark.parametrize("passed", [True, False])
def test_a_student_its_export_refuses_is_not_met(tiny_run, tmp_path, passed):
    cfg = CompressConfig(
        teacher=str(tiny_run), method="magnitude", adversary="none", epochs=1,
        finetune_epochs=0, batch_size=128, lr=1e-2, steps=2,
    )  # fmt: skip
    teacher, _ = load_model(tiny_run)
    limit = 0.8 * GateMeasures(True).size(teacher) / 1024
    out = tmp_path / "s"
    m = compress_to_budget(cfg, Budget("flash_kb", limit), out, GateMeasures(passed), ("fgsm",))
    b = m["budget"]
    assert b["student"] <= limit and b["export_parity"] is passed and b["met"] is passed


class ChannelExports:
    """Flash measures whose file holds, beyond the int8 weights (under zlib: quick), 100 B
    plus 8 B per output channel: a narrow student has less around its weights than the
    teacher, as real int8 TFLite files do (counted in ``exports``)."""

    def __init__(self) -> None:
        self.exports = 0

    def pack(self, raw: bytes) -> bytes:
        import zlib

        return zlib.compress(raw, 1)

    def model_flash(self, model, spec, data_name, data_dir):
        from robustedge.compress.budget.flash import compressed_weight_bytes

        self.exports += 1
        return {"flash_bytes": compressed_weight_bytes(model, self.pack) + around(model)}


def around(model: nn.Module) -> int:
    """ChannelExports' bytes around the weights: 100 + 8 per conv / linear output channel."""
    return 100 + 8 * sum(m.weight.shape[0] for m in model.modules() if hasattr(m, "weight"))


def test_the_flash_estimate_is_recalibrated_on_the_structure_found():
    """Calibrated on the teacher (100 + 8 x 236 channels = 1988 B around its weights), the
    search cuts too much; the export of what it found holds less around its weights, and the
    search on that calibration keeps more channels within the same budget."""
    from robustedge.compress.budget import FlashStrategy, Teacher, search_flash
    from robustedge.compress.budget.flash import structure_of

    model, budget, exports = lenet(), Budget("flash_kb", 5.0, shape="uniform"), ChannelExports()
    today = FlashStrategy(budget, Teacher(model, None, "digits", None, SHAPE), exports)
    today.calibrations = 0
    today.prepare()
    assert today.fixed == 1988 and exports.exports == 1
    first = today.search()
    assert first.value == search_flash(model, SHAPE, budget, 1988, exports.pack).value
    s = FlashStrategy(budget, Teacher(model, None, "digits", None, SHAPE), exports)
    s.prepare()
    found = s.search()
    cut = structure_of(model, SHAPE, first)
    assert s.calibrated[0]["fixed_bytes"] == around(cut) < 1988  # measured on the first cut
    assert len(s.calibrated) <= 2 and s.fixed == found.choice["fixed_bytes"] < 1988
    assert found.channel_sparsity < first.channel_sparsity  # wider, in the same budget
    assert s.measure(structure_of(model, SHAPE, found)) == found.value <= 5.0 * 0.97
    assert s.record(found, found.value, [])["calibration"] == s.calibrated


def test_a_method_that_learns_its_own_rates_is_refused_per_layer_widths_before_the_search(
    tmp_path, cli
):
    """HARP learns each layer's rate, so `shape=layers` (searched per-layer widths) contradicts
    it: refused in one line before the teacher is even read (here it does not exist), not
    after minutes of width search; `shape=uniform` gets past that check to the teacher."""
    missing = tmp_path / "no-teacher"
    cfg = CompressConfig(teacher=str(missing), method="harp", structured=True)
    with pytest.raises(ValueError, match="HARP learns each layer's rate"):
        compress_to_budget(cfg, Budget("macs", 1000.0, shape="layers"), tmp_path / "s")
    with pytest.raises(Exception, match="no-teacher") as uniform:
        compress_to_budget(cfg, Budget("macs", 1000.0, shape="uniform"), tmp_path / "s")
    assert "HARP" not in str(uniform.value)
    args = ["compress", "--teacher", str(missing), "--method", "harp", "--structured"]
    r = cli(*args, "--budget", "macs=1000,shape=layers", "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "HARP learns each layer's rate" in r.stderr
