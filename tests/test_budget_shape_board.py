"""benchmarks/budget_shape.py's board step (issue 24): a student's export benched on a board as
``robustedge bench`` does, the attacks recorded as they ran, and the layers - today gap the
docs report against the +5 points target, checked on hand-computed rows."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))

import docs_budgets  # noqa: E402

import budget_shape  # noqa: E402


def test_board_rows_bench_the_export_on_the_local_board(device_export):
    a = argparse.Namespace(board_targets=["local"], board_square_queries=10, board_square_n="20")
    (b,) = budget_shape.board_rows(device_export, "t", a)
    export = json.loads((device_export / "export" / "export.json").read_text())
    assert b["target"] == "local" and not b["emulated"] and b["format"] == "tflite-int8"
    # the attacks as they ran: the export's transfer set, Square with the asked budget
    assert b["transfer_attack"] == export["transfer_attack"]
    sq = b["square_attack"]
    assert (sq["n_queries"], sq["n"], sq["n_total"]) == (10, 20, b["n_test"])
    assert b["weaker"] == f"weaker than default: Square-10 on 20 of {b['n_test']} images"
    # the board replays the export's eval set: its int8 clean accuracy within the parity
    # gate's margin of the gate's own (another TFLite build may flip an image or two)
    parity = export["artifacts"]["tflite-int8"]["parity"]
    assert abs(100 * (b["clean"] - parity["clean_acc"])) <= parity["margins"]["clean"]
    # per image worst of the two attacks on the first 20 images: never above either
    assert round(b["worst_case"] * 20) == b["worst_case"] * 20
    assert b["worst_case"] <= b["square"] and "on-board" in b["worst_case_label"]


def test_layers_minus_today_per_seed_and_the_target_verdict():
    def row(seed, shape, host, board):
        return {"seed": seed, "budget_kb": 3.1, "shape": shape, "worst_case": host,
                "board": [{"target": "local", "worst_case": board}]}  # fmt: skip

    rows = [row(0, "layers", 0.50, 0.48), row(0, "today", 0.25, 0.40), row(1, "layers", 0.47, 0.46)]
    rows += [row(1, "today", 0.23, 0.44), row(2, "today", 0.2, 0.2)]  # seed 2: no layers row
    board = docs_budgets.shape_gaps(rows, 3.1, "worst_case", "local")
    assert board.keys() == {0, 1}
    assert abs(board[0] - 8.0) < 1e-9 and abs(board[1] - 2.0) < 1e-9  # 48-40, 46-44
    host = docs_budgets.shape_gaps(rows, 3.1, "worst_case")
    assert abs(host[0] - 25.0) < 1e-9 and abs(host[1] - 24.0) < 1e-9
    # mean 5.0: met on the mean, seed 1 below; a mean of 4.0 misses by 1.0
    assert docs_budgets.gap_verdict(board) == "met on the mean, not on seed 1 (+2.0)"
    assert docs_budgets.gap_verdict({0: 6.0, 1: 2.0}, 5.0) == "missed on the mean by 1.0 points"
    assert docs_budgets.gap_verdict(host) == "met on every seed"
