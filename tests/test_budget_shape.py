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
    state = GreedyShape(model, SHAPE, macs_measure(SHAPE), width_loss, (False, False), 1 / 16)
    assert state.value == 66600 and state.full == {"3": 16, "7": 120, "9": 84}
    # moves: 1/16 of the current width, at least 1: round(16/16), round(7.5), round(5.25)
    assert {n: state.move(n) for n in state.widths} == {"3": 1, "7": 8, "9": 5}
    # conv 3 16->15 saves 2400 + 480 (fc 7's inputs 64->60) for 10/16 = 0.625 of loss;
    # fc 7 120->112 saves 512 + 672 for 5 * 8/120; fc 9 84->79 saves 600 + 50 for 3 * 5/84
    scores = {n: state.candidate(n)[0] for n in state.widths}
    assert scores["3"] == pytest.approx(0.625 / 2880)
    assert scores["7"] == pytest.approx((5 * 8 / 120) / 1184)
    assert scores["9"] == pytest.approx((3 * 5 / 84) / 650)
    assert state.step(limit=0.0)
    assert state.widths == {"3": 15, "7": 120, "9": 84} and state.value == 66600 - 2880
    student = shrunk_to(model, SHAPE, state.widths)
    assert count_macs(student, SHAPE)["dense"] == 63720
    state.widths["7"] = 8  # a narrow layer moves by one channel, not 1/16 of its original
    assert state.move("7") == 1 and state.move("3") == 1


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
    assert Budget.parse("flash_kb=4").shape is Shape.UNIFORM  # the default, until measured
    assert Budget.parse("macs=2M, shape=layers").shape is Shape.LAYERS
    assert Budget.parse("latency_ms=2", "local").shape is Shape.UNIFORM  # board runs: opt-in
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
def test_a_macs_budget_trains_the_searched_widths(lenet_run, tmp_path, shape):
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
    m = compress_to_budget(
        cfg, Budget("flash_kb", limit, shape="layers"), out, GateMeasures(passed), ("fgsm",)
    )
    b = m["budget"]
    assert b["student"] <= limit and b["export_parity"] is passed and b["met"] is passed
