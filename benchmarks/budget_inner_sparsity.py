"""Diagnosis: would sparsity inside the kept channels store more weights within a flash budget?

Issue 24 asks the budget search to combine non-uniform widths with "sparsity inside kept
channels, both at once, where it stores more robust capacity per byte". The flash search
(``compress/budget/flash.py``) already keeps the structure that stores the most non-zero
weights within the budget, choosing between channels removed and weights zeroed. This
measures the third option without training anything: for each inner sparsity ``s``, the
widest one-fraction channel structure (``search.shrunk_copy``) that meets the budget (less the
search's margin) once ``s`` of its kept weights are zeroed (global magnitude ranking), and the
non-zero weights it stores. The estimate is the search's own: int8 weights packed with the
bundle's codec, plus the file's fixed part, measured on the teacher's ``tflite-int8`` export
and, per budget, measured again on the export of the channels-only structure found with it
(the flash strategy's re-calibration), then used for every ``s``.

    .venv/bin/python benchmarks/budget_inner_sparsity.py \
        --teacher benchmarks/results/teacher_demo --budgets 3.1 4.0
    .venv/bin/python benchmarks/budget_inner_sparsity.py \
        --teacher benchmarks/results/tradeoff/synthetic32/teacher_resnet8_e30 --fractions 0.125
Writes benchmarks/results/budget_inner_sparsity.json (rows of every teacher, kept across calls).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, hardware, table, write_result  # noqa: E402

INNER = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def fixed_bytes(model, spec, data, data_dir, pack) -> Dict[str, float]:
    """The estimate's fixed part, as the flash strategy calibrates it: ``model``'s export
    less its packed int8 weights."""
    from robustedge.compress.budget.flash import compressed_weight_bytes
    from robustedge.recipe.budget_measures import BoardMeasures

    flash = BoardMeasures().model_flash(model, spec, data.name, data_dir)["flash_bytes"]
    return {"flash_bytes": flash, "fixed": flash - compressed_weight_bytes(model, pack)}


def widest(model, shape, inner: float, aim_kib: float, measure) -> Dict[str, Any]:
    """The smallest channel fraction (of GRID) whose copy, ``inner`` of its kept weights
    zeroed, meets ``aim_kib``: its fraction, widths, estimate and non-zero weights."""
    from robustedge.compress.budget.flash import sparse_copy, stored_weights
    from robustedge.compress.budget.search import GRID, Candidate, bisect, shrunk_copy

    made: Dict[int, Any] = {}

    def probe(i: int) -> Candidate:
        m, widths = shrunk_copy(model, shape, i / GRID)
        m = sparse_copy(m, inner) if inner else m
        made[i] = (m, widths)
        value = float(measure(m))
        return Candidate(i / GRID, widths, value, value <= aim_kib)

    last = probe(GRID - 1)
    if not last.meets:
        return {"inner": inner, "found": False}
    best = bisect(probe, -1, GRID - 1, last)
    m, widths = made[round(best.channel_sparsity * GRID)]
    return {
        "model": m,
        "inner": inner,
        "found": True,
        "channels_removed": best.channel_sparsity,
        "widths": widths,
        "predicted_kib": round(best.value, 4),
        "nonzero": stored_weights(m),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--budgets", type=float, nargs="*", default=[], help="KiB")
    ap.add_argument("--fractions", type=float, nargs="*", default=[], help="of the teacher")
    a = ap.parse_args()
    import torch

    from robustedge.codec import compress_bytes
    from robustedge.compress.budget.flash import FLASH_MARGIN, flash_estimate, stored_weights
    from robustedge.compress.config import CompressConfig
    from robustedge.compress.pipeline import load_teacher

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = CompressConfig.from_keys(teacher=a.teacher, sparsity=0.5)
    model, spec, t_cfg, data = load_teacher(cfg)
    model = model.cpu().eval()
    data_dir = t_cfg.get("data_dir")
    cal = fixed_bytes(model, spec, data, data_dir, compress_bytes)
    teacher_kib = cal["flash_bytes"] / 1024
    budgets = list(a.budgets) + [round(f * teacher_kib, 3) for f in a.fractions]
    rows: List[Dict[str, Any]] = []
    for kib in budgets:
        aim = kib * (1 - FLASH_MARGIN)
        first = widest(
            model, data.input_shape, 0.0, aim, flash_estimate(cal["fixed"], compress_bytes)
        )
        fixed = cal["fixed"]
        if first["found"]:  # re-calibrated on the channels-only structure's export
            fixed = fixed_bytes(first["model"], spec, data, data_dir, compress_bytes)["fixed"]
        measure = flash_estimate(fixed, compress_bytes)
        for inner in INNER:
            r = widest(model, data.input_shape, inner, aim, measure)
            r.pop("model", None)
            rows.append(
                {"teacher": a.teacher, "budget_kib": kib, "aim_kib": round(aim, 4),
                 "fixed_bytes": fixed, **r}
            )  # fmt: skip
    path = RESULTS / "budget_inner_sparsity.json"
    prev = json.loads(path.read_text()) if path.is_file() else {}
    teacher = {
        "flash_bytes": cal["flash_bytes"],
        "fixed_bytes": cal["fixed"],
        "nonzero": stored_weights(model),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_result(
        "budget_inner_sparsity",
        {
            "benchmark": "budget_inner_sparsity",
            "hardware": hardware(),
            "margin": FLASH_MARGIN,
            "teachers": {**prev.get("teachers", {}), a.teacher: teacher},
            "rows": [r for r in prev.get("rows", []) if r["teacher"] != a.teacher] + rows,
        },
    )
    print(_table(rows))


def _table(rows: List[Dict[str, Any]]) -> str:
    head = ["budget KiB", "inner sparsity", "channels removed", "pred. KiB", "non-zero weights"]
    return table(
        head,
        [
            [r["budget_kib"], r["inner"], f"{r['channels_removed']:.3f}", r["predicted_kib"],
             r["nonzero"]] if r["found"] else [r["budget_kib"], r["inner"], "-", "-", "none"]
            for r in rows
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
