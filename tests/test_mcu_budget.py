"""Microcontroller budgets: ``arena_kb`` (TFLM's tensor arena, measured by the TFLM
interpreter on real int8 exports) and ``tflm_flash_kb`` (the plain int8 file TFLM keeps)."""

from __future__ import annotations

import pytest

pytest.importorskip("tflite_micro", reason="pip install tflite-micro (requirements/mcu.txt)")

from robustedge.compress import CompressConfig  # noqa: E402
from robustedge.compress.budget import Budget, Quantity, compress_to_budget  # noqa: E402
from robustedge.compress.budget.mcu import PlainFlash  # noqa: E402
from robustedge.errors import RobustEdgeError  # noqa: E402
from robustedge.io import read_json  # noqa: E402
from robustedge.models import load_model  # noqa: E402
from robustedge.recipe.budget_measures import BoardMeasures  # noqa: E402
from robustedge.recipe.students import resolve_budget  # noqa: E402

MEASURES = BoardMeasures()


class ArenaByShapes:
    """:data:`MEASURES`, whose arena of a model with the same tensor shapes as one it already
    measured is that TFLM measurement (the arena depends on tensor shapes only, as the test
    below checks on the trained student): the teacher the test measures is the search's
    first candidate, exported and measured once for the module's tests instead of three
    times."""

    def __init__(self) -> None:
        self.seen: dict = {}

    def __getattr__(self, name: str):
        return getattr(MEASURES, name)

    def model_arena(self, model, spec, data_name, data_dir) -> dict:
        key = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
        if key not in self.seen:
            self.seen[key] = MEASURES.model_arena(model, spec, data_name, data_dir)
        return self.seen[key]


@pytest.fixture(scope="module")
def measures() -> ArenaByShapes:
    return ArenaByShapes()


def test_mcu_budgets_parse_and_refuse_a_target():
    assert Budget.parse("arena_kb=256").quantity is Quantity.ARENA_KB
    assert Budget.parse("tflm_flash_kb=512").unit == "KiB"
    with pytest.raises(ValueError, match="needs no target"):
        resolve_budget("arena_kb=256", "local")
    with pytest.raises(ValueError, match="arena_kb=N"):
        Budget.parse("arena_kb")


def test_plain_flash_counts_the_file_not_its_compressed_bytes():
    class Inner:
        def run_flash(self, run):
            return {"format": "tflite-int8", "flash_bytes": 900, "model_bytes": 5200}

    m = PlainFlash(Inner())
    assert m.pack(b"abc") == b"abc"  # no codec: an MCU keeps the file as it is
    rec = m.run_flash("x")
    assert rec["flash_bytes"] == 5200 and rec["codec"] is None


@pytest.mark.slow
def test_arena_budget_is_met_by_the_arena_tflm_measures(tiny_run, tmp_path, measures):
    """The teacher's arena measured by TFLM on its export; a limit below it; the student's
    export needs an arena under the limit, measured the same way, and it is recorded."""
    teacher, spec = load_model(tiny_run)
    t = measures.model_arena(teacher.eval(), spec, "digits", None)
    limit_kib = round((t["arena_bytes"] - 40) / 1024, 4)  # the tiny CNN shrinks by < 100 B
    # the student test_mcu_joint_budget's TFLM test trains (same limit, settings, structure):
    # in one session its export is converted once
    cfg = CompressConfig(teacher=str(tiny_run), adversary="fgsm", epochs=1, finetune_epochs=1)
    budget = Budget.parse(f"arena_kb={limit_kib}")
    m = compress_to_budget(cfg, budget, tmp_path / "s", measures, eval_attacks=("fgsm",))
    b = m["budget"]
    assert b["met"] and b["measured"]["arena_bytes"] <= limit_kib * 1024 < t["arena_bytes"]
    assert b["student"] == b["measured"]["arena_bytes"] / 1024
    assert b["channel_sparsity"] > 0 and m["structured"]
    # the arena depends on tensor shapes only: the trained student needs what its candidate did
    assert abs(b["student"] - b["predicted"]) < 1e-9
    assert read_json(tmp_path / "s" / "metrics.json")["budget"] == b


@pytest.mark.slow
def test_arena_budget_out_of_reach_names_the_kept_first_conv(tiny_run, tmp_path, measures):
    """A limit the narrowest student misses is refused before training, in one line that
    names both arenas and the first conv the search kept."""
    cfg = CompressConfig(teacher=str(tiny_run), adversary="fgsm", epochs=1, finetune_epochs=1)
    with pytest.raises(RobustEdgeError, match="narrowest student needs .*include_first: true"):
        compress_to_budget(cfg, Budget.parse("arena_kb=0.5"), tmp_path / "s", measures)
    assert not (tmp_path / "s" / "metrics.json").exists()


class PlainExports:
    """Export sizes without exporting: the file is its int8 weight storage (``int8_stream``)
    plus ``fixed`` bytes; its compressed size is reported as 1 byte, which a TFLM flash budget
    must not use."""

    def __init__(self, fixed: int) -> None:
        self.fixed = fixed

    def sizes(self, model) -> dict:
        from robustedge.compress.budget.flash import int8_stream

        plain_bytes = len(int8_stream(model)) + self.fixed
        return {"format": "tflite-int8", "flash_bytes": 1, "model_bytes": plain_bytes}

    def model_flash(self, model, spec, data_name, data_dir):
        return self.sizes(model)

    def run_flash(self, run):
        return {**self.sizes(load_model(run)[0]), "how": "int8 weights + fixed"}


def test_tflm_flash_budget_removes_channels_to_fit_the_plain_file(tiny_run, tmp_path):
    from robustedge.compress.budget import CHANNELS

    fake = PlainExports(fixed=1500)
    teacher_bytes = fake.sizes(load_model(tiny_run)[0])["model_bytes"]
    limit = round(0.7 * teacher_bytes / 1024, 3)
    cfg = CompressConfig(teacher=str(tiny_run), adversary="none", epochs=1, finetune_epochs=1)
    m = compress_to_budget(cfg, Budget.parse(f"tflm_flash_kb={limit}"), tmp_path / "s", fake)
    b = m["budget"]
    assert b["met"] and b["measured"]["flash_bytes"] == b["measured"]["model_bytes"]
    assert b["measured"]["flash_bytes"] <= limit * 1024 < teacher_bytes
    assert b["measured"]["codec"] is None and b["structure"] == CHANNELS
    assert b["quantity"] == "tflm_flash_kb" and m["structured"]
