"""Compression to a budget: parsing, the structure search, the trained student, refusals."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

from robustedge.compress import CompressConfig
from robustedge.compress.budget import GRID, Budget, Quantity, compress_to_budget, search_structure
from robustedge.compress.budget.measures import flash_measure, int8_weight_bytes, macs_measure
from robustedge.compress.budget.search import Candidate, bisect, shrunk_copy
from robustedge.errors import RobustEdgeError
from robustedge.io import read_json
from robustedge.models import ModelSpec, build_model, count_macs, load_model


def test_budget_strings():
    assert Budget.parse("macs=2M") == Budget(Quantity.MACS, 2e6)
    assert Budget.parse(" macs = 500k ").limit == 5e5
    assert Budget.parse("flash_kb=64").limit == 64.0
    b = Budget.parse("latency_ms=2", "local")
    assert (b.quantity, b.limit, b.target, b.unit) == (Quantity.LATENCY_MS, 2.0, "local", "ms")


@pytest.mark.parametrize(
    "text,target,message",
    [
        ("macs", None, "bad budget 'macs'"),
        ("macs=", None, "bad budget"),
        ("macs=2X", None, "'2X' is not a number"),
        (
            "ram_kb=3",
            None,
            "unknown budget 'ram_kb' (known: macs, flash_kb, latency_ms, arena_kb, tflm_flash_kb)",
        ),
        ("flash_kb=0", None, "must be a positive number"),
        ("flash_kb=nan", None, "must be a positive number"),
        ("latency_ms=2", None, "give --budget-target"),
        ("macs=2M", "local", "needs no target"),
    ],
)
def test_bad_budget_is_one_line_error(text, target, message):
    with pytest.raises(ValueError) as info:
        Budget.parse(text, target)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_search_finds_the_widest_structure_under_a_macs_budget():
    shape = (3, 32, 32)
    model = build_model(ModelSpec("resnet8", shape, 10)).eval()
    teacher_macs = count_macs(model, shape)["dense"]
    budget = Budget.parse("macs=3M")
    result = search_structure(model, shape, budget, macs_measure(shape))
    assert result.teacher_value == teacher_macs > 3e6
    assert 0 < result.channel_sparsity < 1 and result.value <= 3e6
    student, _ = shrunk_copy(model, shape, result.channel_sparsity)
    assert count_macs(student, shape)["dense"] == result.value  # the measure is the count
    wider, _ = shrunk_copy(model, shape, result.channel_sparsity - 1 / GRID)
    assert count_macs(wider, shape)["dense"] > 3e6  # one grid step wider does not fit
    assert len(result.candidates) <= 2 + 6  # ends, then bisection over 64 fractions
    with pytest.raises(RobustEdgeError, match="cannot be met") as info:
        search_structure(model, shape, Budget.parse("macs=1k"), macs_measure(shape))
    assert "\n" not in str(info.value)


def test_budget_met_by_the_teacher_keeps_every_channel():
    shape = (1, 8, 8)
    model = build_model(ModelSpec("tiny", shape, 10)).eval()
    result = search_structure(model, shape, Budget.parse("macs=1M"), macs_measure(shape))
    assert result.channel_sparsity == 0.0 and len(result.candidates) == 1


def test_flash_measure_counts_int8_weight_storage():
    model = build_model(ModelSpec("lenet5", (1, 8, 8), 10))
    weights = sum(m.weight.numel() for m in model.modules() if hasattr(m, "weight"))
    channels = 6 + 16 + 120 + 84 + 10
    assert int8_weight_bytes(model) == weights + 16 * channels == 24_926
    shape = (3, 32, 32)
    resnet8 = build_model(ModelSpec("resnet8", shape, 10)).eval()
    result = search_structure(resnet8, shape, Budget.parse("flash_kb=20"), flash_measure())
    assert result.teacher_value > 64 and result.value <= 20  # 78k int8 weights -> under 20 KiB
    student, _ = shrunk_copy(resnet8, shape, result.channel_sparsity)
    assert int8_weight_bytes(student) == result.value * 1024


def test_compress_to_a_macs_budget_trains_and_records_it(tiny_run, tmp_path):
    out = tmp_path / "budget"
    cfg = CompressConfig(
        teacher=str(tiny_run), adversary="fgsm", epochs=1, finetune_epochs=1, batch_size=128
    )
    m = compress_to_budget(cfg, Budget.parse("macs=15k"), out, eval_attacks=("fgsm",))
    b = m["budget"]
    assert b["met"] and b["student"] == m["macs"]["dense"] <= 15_000 < m["teacher"]["macs"]
    assert b["student"] == b["predicted"]  # the trained student has the searched structure
    assert m["structured"] and m["scope"] == "layer" and m["method"] == "prox"
    assert m["notes"]["channel_sparsity"] == pytest.approx(b["channel_sparsity"], abs=1 / 16)
    assert read_json(out / "metrics.json")["budget"] == b  # recorded with the run
    model, _ = load_model(out)
    assert count_macs(model, (1, 8, 8))["dense"] == b["student"]


def test_cli_refuses_latency_on_emulated_target_and_bad_budgets(tiny_run, tmp_path, cli):
    base = ["compress", "--teacher", str(tiny_run), "--epochs", "1"]
    cases = [
        (["--budget", "latency_ms=2", "--budget-target", "qemu-aarch64"], "it is emulated"),
        (["--budget", "macs=2X"], "'2X' is not a number"),
        (["--budget-target", "local"], "--budget-target needs --budget"),
    ]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"o{i}"
        r = cli(*base, *args, "--out", str(out))
        assert r.returncode != 0 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not out.exists()


@pytest.mark.slow
def test_latency_probe_times_a_candidate_on_the_local_board(tiny_run):
    from robustedge.models import load_spec
    from robustedge.recipe.budget_measures import BoardMeasures

    spec, _ = load_spec(tiny_run)
    model, _ = load_model(tiny_run)
    measure = BoardMeasures().latency("local", spec, "digits", None)
    p50 = measure(model.eval())
    assert 0 < p50 < 100  # ms: one int8 inference of a tiny CNN, timed by the board runner


def test_bisection_picks_the_first_index_that_meets_a_hand_made_monotone_measure():
    """value(i) = 64 - i against a limit of 40.5: i = 24 is the first to meet (40 <= 40.5;
    i = 23 gives 41). From (lo 0 fails, hi 63 meets) the midpoints are 31 (meets), 15 (fails),
    23 (fails), 27, 25, 24 (meet)."""
    probed = []

    def probe(i):
        probed.append(i)
        value = 64.0 - i
        return Candidate(i / GRID, {}, value, value <= 40.5)

    best = bisect(probe, 0, 63, probe(63))
    assert probed == [63, 31, 15, 23, 27, 25, 24]
    assert (best.channel_sparsity, best.value) == (24 / 64, 40.0)


def test_channel_search_picks_the_expected_fraction_on_a_hand_made_measure():
    """The tiny CNN has one prunable layer of 16 channels; removing i/64 of them keeps
    16 - round(16 i / 64) (at least 1). Measured by that width against a limit of 10 channels:
    i = 22 keeps 16 - round(5.5) = 10, i = 21 keeps 16 - round(5.25) = 11, so the search
    returns 22/64, after probing 0, 63, then 31, 15, 23, 19, 21, 22."""
    shape = (1, 8, 8)
    model = build_model(ModelSpec("tiny", shape, 10)).eval()

    def width(student):
        return float(student[3].out_channels)

    limit = Budget(Quantity.MACS, 10.0)  # any quantity: the measure is the width
    r = search_structure(model, shape, limit, width)
    assert r.channel_sparsity == 22 / 64 == 0.34375
    assert (r.value, r.teacher_value) == (10.0, 16.0)
    probed = [c.channel_sparsity * 64 for c in r.candidates]
    assert probed == [0, 63, 31, 15, 23, 19, 21, 22]
    assert [c.value for c in r.candidates] == [16, 1, 8, 12, 10, 11, 11, 10]
    assert [c.widths["3"] for c in r.candidates] == [16, 1, 8, 12, 10, 11, 11, 10]


def _imports(path):
    """Every module ``path`` imports, at the top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_compress_imports_neither_export_nor_device_not_even_lazily():
    """The budget code's flash and latency measures come from above (recipe/budget_measures);
    the import-linter contract says so and every compress module keeps it."""
    src = Path(__file__).resolve().parents[1] / "src" / "robustedge" / "compress"
    found = [
        (p.name, m)
        for p in sorted(src.rglob("*.py"))
        for m in _imports(p)
        if m.split(".")[:2] in (["robustedge", "export"], ["robustedge", "device"])
    ]
    assert found == []
    assert (src / "budget" / "strategies.py").is_file()  # the package was scanned
    pyproject = tomllib.loads((src.parents[2] / "pyproject.toml").read_text())
    contracts = pyproject["tool"]["importlinter"]["contracts"]
    assert any(
        c["type"] == "forbidden"
        and c["source_modules"] == ["robustedge.compress"]
        and set(c["forbidden_modules"]) == {"robustedge.export", "robustedge.device"}
        for c in contracts
    )
