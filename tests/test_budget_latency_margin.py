"""A latency budget holds back a margin for measurement noise and re-checks the trained student:
one measured over the limit is searched and trained once more with the margin widened.

The board here is a timing function of the work (MACs) passed in as the ``measures`` object
(its ``latency``), the seam a real target plugs into; what is tested is the search, the margin
and the retry, on a real tiny student trained by the real pipeline."""

from __future__ import annotations

from robustedge.compress import CompressConfig
from robustedge.compress.budget import LATENCY_MARGIN, Budget, Quantity, compress_to_budget
from robustedge.io import read_json
from robustedge.models import count_macs

MS_PER_MAC = 1e-5  # the tiny CNN's ~30k MACs -> ~0.3 ms


def _board(repeat_slowdown: float):
    """p50 in ms proportional to MACs; an architecture measured again reads
    ``repeat_slowdown`` slower per earlier measurement (the search's reading was a lucky one).
    Returns (measures, calls)."""
    calls = []

    class Board:
        def latency(self, target, spec, data_name, data_dir):
            assert target == "local" and data_name == "digits"

            def measure(model):
                macs = count_macs(model, tuple(spec.input_shape))["dense"]
                seen = calls.count(macs)
                calls.append(macs)
                return macs * MS_PER_MAC * (1.0 + repeat_slowdown * seen)

            return measure

    return Board(), calls


def _cfg(tiny_run):
    return CompressConfig(
        teacher=str(tiny_run), adversary="none", epochs=1, finetune_epochs=1, batch_size=128
    )


def test_latency_budget_aims_below_its_limit(tiny_run, tmp_path):
    board, _ = _board(0.0)
    budget = Budget(Quantity.LATENCY_MS, 0.15, "local")
    m = compress_to_budget(_cfg(tiny_run), budget, tmp_path / "s", board, ("fgsm",))
    b = m["budget"]
    assert b["met"] and len(b["tries"]) == 1 and b["margin"] == LATENCY_MARGIN
    assert b["predicted"] <= 0.15 * (1 - LATENCY_MARGIN)  # aimed below, not at the limit
    assert b["student"] == b["predicted"]
    assert read_json(tmp_path / "s" / "metrics.json")["budget"] == b


def test_student_over_its_latency_budget_is_searched_again_with_a_wider_margin(tiny_run, tmp_path):
    board, calls = _board(0.15)  # re-measured: 15 % slower
    budget = Budget(Quantity.LATENCY_MS, 0.15, "local")
    m = compress_to_budget(_cfg(tiny_run), budget, tmp_path / "s", board, ("fgsm",))
    b = m["budget"]
    first, second = b["tries"]
    assert first["margin"] == LATENCY_MARGIN and first["measured"] > 0.15
    assert second["margin"] == b["margin"] > LATENCY_MARGIN
    assert second["predicted"] < first["predicted"]  # a narrower student the second time
    assert b["student"] == second["measured"]
    assert b["met"] and b["student"] <= 0.15 < first["measured"]
    assert len(calls) > 4
