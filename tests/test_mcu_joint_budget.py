"""Joint budgets: several limits at once (``arena_kb=A,tflm_flash_kb=F``), searched as one on
the binding constraint's share of its limit, each limit measured and recorded on its own.

The fast tests use stand-in measures whose values are written by hand for the tiny CNN (one
prunable layer, conv ``3`` of 16 channels; the search keeps ``w`` of them):

- arena: 1024 + 64 w bytes;
- TFLM flash: the int8 weight storage (200 B for conv ``0``, 88 w for conv ``3``, 10 w + 160
  for the linear layer: 360 + 98 w) plus a fixed 1,000 B, so 1,360 + 98 w bytes.

The per-layer (``shape=layers``) joint search is checked on LeNet-5 with its own hand
measures (:class:`LeNetMeasures`).
"""

from __future__ import annotations

import pytest
import torch

from robustedge.compress import CompressConfig
from robustedge.compress.budget import (
    Budget,
    JointBudget,
    Quantity,
    Shape,
    compress_to_budget,
    parse_budget,
)
from robustedge.errors import RobustEdgeError
from robustedge.io import read_json
from robustedge.models import load_model


def width(model) -> int:
    return int(model[3].out_channels)


class HandMeasures:
    """Arena and plain-file sizes of the tiny CNN by the formulas above (no export)."""

    def __init__(self) -> None:
        self.arena_calls = 0
        self.flash_calls = 0  # model_flash: the teacher's export calibrating the estimate

    def model_arena(self, model, spec, data_name, data_dir):
        self.arena_calls += 1
        return {"arena_bytes": 1024 + 64 * width(model)}

    def run_arena(self, run):
        return {"arena_bytes": 1024 + 64 * width(load_model(run)[0]), "how": "by hand"}

    def sizes(self, model):
        return {"format": "tflite-int8", "flash_bytes": 1, "model_bytes": 1360 + 98 * width(model)}

    def model_flash(self, model, spec, data_name, data_dir):
        self.flash_calls += 1
        return self.sizes(model)

    def run_flash(self, run):
        return {**self.sizes(load_model(run)[0]), "how": "by hand"}


def test_parse_several_limits_into_one_joint_budget():
    b = parse_budget("arena_kb=28.55,tflm_flash_kb=23.09,shape=layers")
    assert isinstance(b, JointBudget) and b.limit == 1.0
    assert [p.quantity for p in b.budgets] == [Quantity.ARENA_KB, Quantity.TFLM_FLASH_KB]
    assert all(p.shape is Shape.LAYERS for p in b.budgets) and b.shape is Shape.LAYERS
    assert b.text() == "arena_kb=28.55,tflm_flash_kb=23.09"
    assert b.to_dict()["limits"] == {"arena_kb": 28.55, "tflm_flash_kb": 23.09}
    assert isinstance(parse_budget("arena_kb=28,shape=layers"), Budget)  # one limit: as before
    with pytest.raises(ValueError, match="arena_kb given twice"):
        parse_budget("arena_kb=1,arena_kb=2")
    with pytest.raises(ValueError, match="unknown budget 'sram_kb'"):
        parse_budget("arena_kb=1,sram_kb=2")
    with pytest.raises(ValueError, match="target is for a latency budget"):
        parse_budget("arena_kb=1,macs=2M", "local")


def test_the_binding_constraint_sets_the_joint_value(tiny_run):
    """One step by hand: at w = 16, arena 2,048 B = 2 KiB and flash 2,928 B = 2.859375 KiB;
    limits 1.6 and 2.5 KiB give shares 1.25 and 1.14375: the joint value is 1.25 (arena binds).
    At w = 8: 1.5 KiB (0.9375 of its limit) and 2,144 B = 2.09375 KiB (0.8375): it meets."""
    from robustedge.compress.budget import JointStrategy, Teacher
    from robustedge.compress.budget.search import shrunk_copy

    model, spec = load_model(tiny_run)
    t = Teacher(model, spec, "digits", None, (1, 8, 8))
    s = JointStrategy(parse_budget("arena_kb=1.6,tflm_flash_kb=2.5"), t, HandMeasures())
    s.prepare()
    assert s.values(model) == {"arena_kb": 2.0, "tflm_flash_kb": 2.859375}
    assert s.measure(model) == pytest.approx(1.25)
    half, _ = shrunk_copy(model, (1, 8, 8), 0.5)
    assert s.measure(half) == pytest.approx(0.9375)


class ExportMeasures(HandMeasures):
    """The arena's export also reports its file: 1,000 + 98 w bytes (the estimate, calibrated on
    the teacher's 1,360 + 98 w, would be 360 B high)."""

    def model_arena(self, model, spec, data_name, data_dir):
        return {**super().model_arena(model, spec, data_name, data_dir),
                "tflm_flash_bytes": 1000 + 98 * width(model)}  # fmt: skip


def test_with_an_arena_limit_flash_is_the_arena_exports_file(tiny_run):
    """At w = 16 the arena's export holds 1,000 + 1,568 = 2,568 B = 2.5078125 KiB of flash:
    that, not the estimate's 2.859375, is the candidate's TFLM flash; at w = 8, 1,784 B. The
    estimate is then never used, so the teacher is not exported to calibrate it."""
    from robustedge.compress.budget import JointStrategy, Teacher
    from robustedge.compress.budget.search import shrunk_copy

    model, spec = load_model(tiny_run)
    t = Teacher(model, spec, "digits", None, (1, 8, 8))
    measures = ExportMeasures()
    s = JointStrategy(parse_budget("tflm_flash_kb=2.5,arena_kb=1.6"), t, measures)
    s.prepare()
    assert s.values(model) == {"tflm_flash_kb": 2.5078125, "arena_kb": 2.0}
    half, _ = shrunk_copy(model, (1, 8, 8), 0.5)
    assert s.values(half)["tflm_flash_kb"] == 1784 / 1024
    assert measures.flash_calls == 0
    with pytest.raises(RobustEdgeError, match="cannot be met"):  # its refusal still holds
        JointStrategy(parse_budget("tflm_flash_kb=0.1,arena_kb=1.6"), t, measures).prepare()
    alone = JointStrategy(parse_budget("tflm_flash_kb=2.5,macs=1M"), t, ExportMeasures())
    alone.prepare()
    assert alone.measures.flash_calls == 1  # calibrated on the teacher's export
    assert alone.values(model)["tflm_flash_kb"] == 2.859375  # no arena: the estimate


def test_joint_budget_student_meets_both_limits_and_records_each(tiny_run, tmp_path):
    """Limits 1.6 KiB arena (w <= 9: 1,600 B) and 2.2 KiB flash (w <= 9: 2,242 B <= 2,252.8):
    the widest student keeps 9 channels; both recorded with the teacher's and the student's
    value, each met; the next wider (w = 10: arena 1,664 B) fails the arena limit."""
    cfg = CompressConfig(teacher=str(tiny_run), adversary="none", epochs=1, finetune_epochs=1)
    budget = parse_budget("arena_kb=1.6,tflm_flash_kb=2.2")
    m = compress_to_budget(cfg, budget, tmp_path / "s", HandMeasures())
    b = m["budget"]
    assert width(load_model(tmp_path / "s")[0]) == 9
    assert b["met"] and b["quantity"] == "arena_kb+tflm_flash_kb"
    arena, flash = b["constraints"]
    assert (arena["quantity"], arena["teacher"], arena["student"]) == ("arena_kb", 2.0, 1600 / 1024)
    assert (flash["quantity"], flash["student"]) == ("tflm_flash_kb", 2242 / 1024)
    assert flash["teacher"] == pytest.approx(2928 / 1024)
    assert arena["met"] and flash["met"] and arena["limit"] == 1.6 and flash["limit"] == 2.2
    assert b["student"] == pytest.approx(max(1600 / 1024 / 1.6, 2242 / 1024 / 2.2))
    assert not any(c["meets"] for c in b["candidates"] if c["widths"]["3"] >= 10)
    assert read_json(tmp_path / "s" / "metrics.json")["budget"] == b


def test_an_impossible_pair_is_refused_in_one_line_before_training(tiny_run, tmp_path):
    """The narrowest student (w = 1) needs 1,088 B arena = 1.0625 KiB and 1,458 B flash =
    1.423828 KiB: an arena limit of 1 KiB cannot be met with any flash limit."""
    cfg = CompressConfig(teacher=str(tiny_run), adversary="none", epochs=1, finetune_epochs=1)
    with pytest.raises(RobustEdgeError) as e:
        compress_to_budget(
            cfg, parse_budget("arena_kb=1,tflm_flash_kb=2"), tmp_path / "s", HandMeasures()
        )
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("budget arena_kb=1,tflm_flash_kb=2 cannot be met")
    assert "arena_kb 1.0625 KiB (limit 1)" in msg and "tflm_flash_kb 1.42383 KiB" in msg
    assert not (tmp_path / "s" / "metrics.json").exists()


class TeacherOnce:
    """Real measures whose first ``model_arena`` answer (the teacher's, which sets the limits)
    is reused when the search measures a model of the same parameter shapes (the teacher
    again, its first candidate): one int8 export fewer."""

    def __init__(self, inner) -> None:
        self.inner, self.first = inner, None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def model_arena(self, model, spec, data_name, data_dir):
        from robustedge.compress.budget.joint import structure_key

        if self.first and self.first[0] == structure_key(model):
            return self.first[1]
        got = self.inner.model_arena(model, spec, data_name, data_dir)
        self.first = self.first or (structure_key(model), got)
        return got


@pytest.mark.slow
def test_joint_budget_on_tflm_measures(tiny_run, tmp_path):
    """Real measures: TFLM's arena of each candidate's int8 export and the plain file's
    bytes; limits just under the teacher's arena and at 90 % of its file; the student's own
    export is under both, as the record says."""
    pytest.importorskip("tflite_micro", reason="pip install tflite-micro (requirements/mcu.txt)")
    from robustedge.recipe.budget_measures import BoardMeasures

    measures = TeacherOnce(BoardMeasures())
    teacher, spec = load_model(tiny_run)
    t = measures.model_arena(teacher.eval(), spec, "digits", None)
    arena = round((t["arena_bytes"] - 40) / 1024, 4)
    flash = round(0.9 * t["tflm_flash_bytes"] / 1024, 4)
    # the student test_mcu_budget's arena test trains (same limit, settings and structure):
    # in one session its export is converted once
    cfg = CompressConfig(teacher=str(tiny_run), adversary="fgsm", epochs=1, finetune_epochs=1)
    budget = parse_budget(f"arena_kb={arena},tflm_flash_kb={flash}")
    b = compress_to_budget(cfg, budget, tmp_path / "s", measures, ("fgsm",))["budget"]
    a, f = b["constraints"]
    assert a["met"] and a["measured"]["arena_bytes"] <= arena * 1024 < t["arena_bytes"]
    assert f["measured"]["model_bytes"] <= flash * 1024 < t["tflm_flash_bytes"]
    assert a["teacher"] == t["arena_bytes"] / 1024
    # TFLM flash is met only when the student's own export passes its parity gate (a 1-epoch
    # tiny student may not): the joint verdict is both parts'
    assert f["met"] == (f["export_parity"] is not False)
    # a refused student's sizes are its own export's file, kept when the gate refused it
    assert ("parity gate refused it" in f["measured"]["how"]) == (f["export_parity"] is False)
    assert b["met"] == (a["met"] and f["met"])


SHAPE = (1, 8, 8)


def width_loss(model) -> float:
    """A stand-in robust loss read off the widths: 10, 5 and 3 per fraction of conv 3, fc 7
    and fc 9 removed."""
    return (
        10 * (1 - model[3].out_channels / 16)
        + 5 * (1 - model[7].out_features / 120)
        + 3 * (1 - model[9].out_features / 84)
    )


class LeNetMeasures:
    """Hand measures of LeNet-5 on 8x8 (prunable: conv ``3``, 16 channels; fc ``7``, 120; fc
    ``9``, 84): arena 1,024 + 64 w3 bytes, its export's file 2,000 + 10 (w7 + w9) bytes."""

    def model_arena(self, model, spec, data_name, data_dir):
        w3, w7, w9 = model[3].out_channels, model[7].out_features, model[9].out_features
        return {"arena_bytes": 1024 + 64 * w3, "tflm_flash_bytes": 2000 + 10 * (w7 + w9)}


def test_per_layer_joint_search_keeps_the_layers_only_the_slack_limit_prices():
    """shape=layers on the joint share, one step by hand. Limits 2.5 KiB arena and 3.5 KiB =
    3,584 B flash; the teacher needs 2,048 B (share 0.8) and 4,040 B (1.127232): flash binds.
    With a move share of 1/16 a move must save 1.127232 / 16 = 0.070452 of the share. Conv 3
    shrinks only the arena: the share stays, no move saves anything and none is offered. Fc 7
    and fc 9 save 10 B = 0.0027902 per unit: 26 units are the fewest that save enough
    (25 save 0.069754), so fc 7 120 -> 94 adds 5 * 26/120 of loss (score 15.38) and fc 9
    84 -> 58 adds 3 * 26/84 (score 13.18): fc 9 goes first. The search ends at
    10 (w7 + w9) <= 1,584 with conv 3 whole, where one fraction for every layer narrows conv 3
    too."""
    from robustedge.compress.budget import JointStrategy, Teacher
    from robustedge.compress.budget.shape import GreedyShape
    from robustedge.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet5", SHAPE, 10)).eval()
    t = Teacher(model, None, "digits", None, SHAPE, (False, False), width_loss)
    s = JointStrategy(
        parse_budget("arena_kb=2.5,tflm_flash_kb=3.5,shape=layers"), t, LeNetMeasures()
    )
    s.prepare()
    state = GreedyShape(model, SHAPE, s.measure, width_loss, (False, False), 1 / 16)
    assert state.value == pytest.approx(4040 / 3584)
    need = state.need(1.0)
    assert need == pytest.approx(4040 / 3584 / 16)
    assert state.candidate("3", need) is None
    fc7, fc9 = state.candidate("7", need), state.candidate("9", need)
    assert fc7.widths["7"] == 94 and fc9.widths["9"] == 58
    assert fc7.value == pytest.approx(3780 / 3584) and fc9.value == pytest.approx(3780 / 3584)
    assert fc7.score == pytest.approx((5 * 26 / 120) / need)
    assert fc9.score == pytest.approx((3 * 26 / 84) / need)
    assert state.step(limit=1.0) and state.widths == {"3": 16, "7": 120, "9": 58}
    found = s.search()
    assert found.widths["3"] == 16 and found.value <= 1.0
    assert 10 * (found.widths["7"] + found.widths["9"]) <= 1584
    uniform = JointStrategy(parse_budget("arena_kb=2.5,tflm_flash_kb=3.5"), t, LeNetMeasures())
    uniform.prepare()
    assert uniform.chosen(uniform.search())[3].out_channels < 16
