"""Structured rows of the trade-off benchmark: students with 2x and 4x fewer MACs than the
teacher, per method, over seeds (issue 24: "the same for structured students").

The protocol is benchmarks/tradeoff.py's (the same teacher, PGD-AT at ``--eps`` with
PGD-``--steps``, ``--epochs`` pruning + ``--finetune-epochs`` fine-tune at the default batch,
the white-box worst-case suite on the whole test set, mean and sample std over ``--seeds``);
only the target differs: a level ``Nx`` asks for a student with at most 1/N of the teacher's
MACs (the one MAC counter, :func:`robustedge.models.count_macs`, dense MACs of one inference).
Every student is made through the path a user calls for that, ``robustedge compress
--structured --method M --budget macs=L`` (:func:`robustedge.recipe.students.compress_student`
with the budget ``macs=floor(teacher MACs / N)``): the budget search finds the channel
structure, the method trains the student of that structure.

Methods (``METHODS``, all ``--structured``): ``default`` (prox, robustedge's default),
``magnitude`` (structured magnitude: channels ranked by the L1 norm of their kernels, Li et
al. 2017) and ``harp`` (structured HARP: learned per-layer rates under a MACs term). The
student's MACs are measured again on the trained model; a student above its level is not
reported: its row goes to ``missed`` (with its MACs and ratio) and no cell uses it. The
per-layer widths (output channels of every Conv2d / Linear) of each student are recorded.

Targets (``TARGET_GAIN``): default minus the best baseline, worst-case points, >= +1 at 2x and
>= +2 at 4x: the unstructured rows' +1 at 90 / 95 % and +2 at 99 %, mirrored (the moderate
and the extreme level); a gap counts only beyond the sum of the two cells' stds
(tradeoff_stats.judge).

    .venv/bin/python benchmarks/tradeoff_structured.py --teacher benchmarks/results/teacher_demo \
        --epochs 40 --finetune-epochs 20 --seeds 0 1 2
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tradeoff  # noqa: E402
from _common import RESULTS, commit, hardware, loadavg, table, write_result  # noqa: E402
from tradeoff_stats import judge, summarize  # noqa: E402

# names of benchmarks/tradeoff.py's METHODS (their overrides), each made --structured
METHODS: Dict[str, Dict[str, Any]] = {
    m: {**tradeoff.METHODS[m], "structured": True} for m in ("default", "magnitude", "harp")
}
LEVELS = ("2x", "4x")
# default minus the best baseline (worst-case points): the unstructured 90 / 95 % -> 99 %
TARGET_GAIN = {"2x": 1.0, "4x": 2.0}


def level_factor(level: str) -> int:
    """``"4x"`` -> 4 (ValueError on anything else)."""
    if not level.endswith("x") or not level[:-1].isdigit() or int(level[:-1]) < 1:
        raise ValueError(f"a MACs level is N x (e.g. 2x), not {level!r}")
    return int(level[:-1])


def macs_limit(teacher_macs: int, factor: int) -> int:
    """The budget asked for: the most MACs a student with ``factor``x fewer may have."""
    return teacher_macs // factor


def level_met(student_macs: int, teacher_macs: int, factor: int) -> bool:
    """True when the student has at most 1/``factor`` of the teacher's MACs."""
    return student_macs * factor <= teacher_macs


def widths(model) -> Dict[str, int]:
    """Output channels (features) of every Conv2d and Linear, by module name."""
    import torch.nn as nn

    return {
        name: int(m.weight.shape[0])
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def measure(run: Path, input_shape: Tuple[int, ...]) -> Tuple[int, Dict[str, int]]:
    """Dense MACs of one inference and the widths of the model saved in ``run``."""
    from robustedge.models import count_macs, load_model

    model, _ = load_model(run)
    return count_macs(model.eval(), tuple(input_shape))["dense"], widths(model)


def request(args, teacher: Path, method: str, level: str, seed: int, teacher_macs: int):
    """The student's CompressConfig and budget string (the level's nominal channel fraction
    as ``sparsity``: the budget search replaces it)."""
    factor = level_factor(level)
    cfg = tradeoff.build_config(args, teacher, method, 1.0 - 1.0 / factor, seed)
    budget = f"macs={macs_limit(teacher_macs, factor)}"
    if getattr(args, "shape", None):  # else the budget's default shape
        budget += f",shape={args.shape}"
    return dataclasses.replace(cfg, structured=True), budget


def train(cfg, budget: str, run: Path) -> None:
    """Train (or reuse: same config and budget in ``run/request.json``) one student."""
    from robustedge.recipe.students import compress_student

    wanted = json.dumps({"config": cfg.to_dict(), "budget": budget}, sort_keys=True, default=str)
    done = run / "request.json"
    if done.is_file() and done.read_text() == wanted and (run / "model.safetensors").is_file():
        return
    shutil.rmtree(run, ignore_errors=True)
    compress_student(cfg, run, budget=budget, eval_attacks=())
    done.write_text(wanted)


def run_cell(args, teacher: Path, method: str, level: str, seed: int, ctx: Dict) -> Dict:
    """One student at one level: trained, measured and (when it meets its level) evaluated
    with the suite. ``ctx``: ``root``, ``teacher_macs``, ``input_shape``. The row's
    ``level_met`` says whether it may be reported."""
    from robustedge.config import FieldError
    from robustedge.errors import RobustEdgeError
    from robustedge.io import read_json

    factor, tm = level_factor(level), ctx["teacher_macs"]
    cfg, budget = request(args, teacher, method, level, seed, tm)
    shape = f"_{args.shape}" if getattr(args, "shape", None) else ""
    run = ctx["root"] / f"{method}_{level}{shape}_e{args.epochs}+{args.finetune_epochs}_s{seed}"
    row: Dict[str, Any] = {"method": method, "level": level, "factor": factor, "seed": seed}
    row.update(budget=budget, teacher_macs=tm, run=str(run))
    try:
        train(cfg, budget, run)
    except (RobustEdgeError, FieldError) as e:  # a budget or setting compress refuses
        return {**row, "level_met": False, "refused": str(e)}
    macs, w = measure(run, ctx["input_shape"])
    m = read_json(run / "metrics.json")
    b = m.get("budget", {})
    row.update(macs=macs, macs_ratio=macs / tm, level_met=level_met(macs, tm, factor))
    row.update(widths=w, params=m.get("params"), budget_met=b.get("met"))
    row.update(channel_sparsity=b.get("channel_sparsity"), shape=b.get("shape"))
    row.update(seconds=m.get("seconds"), batch_size=cfg.batch_size)
    if row["level_met"]:
        row.update(tradeoff.suite_row(tradeoff.suite_of(run, tradeoff._data(teacher, args), args)))
    return row


def teacher_row(args, teacher: Path) -> Dict[str, Any]:
    """The teacher's suite result, MACs and widths."""
    from robustedge.io import read_json

    data = tradeoff._data(teacher, args)
    macs, w = measure(teacher, data.input_shape)
    row = {"run": str(teacher), "params": read_json(teacher / "metrics.json").get("params")}
    row.update(tradeoff.suite_row(tradeoff.suite_of(teacher, data, args)))
    return {**row, "macs": macs, "widths": w, "input_shape": list(data.input_shape)}


def _fmt(c: Dict, k: str) -> str:
    return "-" if c.get(k) is None else f"{100 * c[k]:.1f}±{100 * c[k + '_std']:.1f}"


def macs_cells(cells: List[Dict], rows: List[Dict]) -> None:
    """Add each cell's MACs ratios (max over its seeds) and its students' widths."""
    for c in cells:
        at = [r for r in rows if (r["method"], r["level"]) == (c["method"], c["level"])]
        c["macs_ratio_max"] = max(r["macs_ratio"] for r in at)
        c["macs_ratios"] = [round(r["macs_ratio"], 4) for r in at]
        c["widths"] = [r["widths"] for r in at]


def collect(args, teacher: Path, ctx: Dict) -> Tuple[List[Dict], List[Dict], List[Dict]]:
    """Rows that met their level, rows that missed it, and cells not run (time)."""
    rows: List[Dict] = []
    missed: List[Dict] = []
    not_run: List[Dict] = []
    for seed in args.seeds:  # whole seeds first: a deadline leaves complete seeds
        for level in args.levels:
            for method in args.methods:
                if args.deadline and time.time() > args.deadline:
                    not_run.append({"method": method, "level": level, "seed": seed})
                    continue
                r = run_cell(args, teacher, method, level, seed, ctx)
                (rows if r["level_met"] else missed).append(r)
                print(_line(r), flush=True)
    return rows, missed, not_run


def _line(r: Dict) -> str:
    head = f"  {r['method']} @ {r['level']} s{r['seed']}: "
    if not r["level_met"]:
        return head + f"MISSED the level ({r.get('refused') or r.get('macs_ratio')})"
    return head + (
        f"MACs {r['macs']} ({r['macs_ratio']:.3f} of the teacher) clean "
        f"{100 * r['clean']:.1f} worst {100 * r['worst']:.1f} widths {r['widths']}"
    )


def run(args, name: str) -> Path:
    """Run ``args.methods`` x ``args.levels`` x ``args.seeds``; print and write the result."""
    t0 = time.perf_counter()
    root = RESULTS / "tradeoff" / args.data
    root.mkdir(parents=True, exist_ok=True)
    teacher = tradeoff.get_teacher(args, root)
    root = root / teacher.resolve().name / "structured"
    root.mkdir(parents=True, exist_ok=True)
    args.cache_roots = []
    t_row = teacher_row(args, teacher)
    ctx = {"root": root, "teacher_macs": t_row["macs"], "input_shape": t_row["input_shape"]}
    rows, missed, not_run = collect(args, teacher, ctx)
    cells = summarize(rows, args.methods, args.levels, by="level")
    macs_cells(cells, rows)
    verdict = judge(cells, args.levels, targets=TARGET_GAIN, by="level")
    keys = ["clean", "pgd", "apgd_ce", "apgd_dlr", "worst"]
    print(
        table(
            ["level", "method", "n", "max MACs ratio", *keys],
            [
                [c["level"], c["method"], c["n"], f"{c['macs_ratio_max']:.3f}"]
                + [_fmt(c, k) for k in keys]
                for c in cells
            ],
        )
    )
    for lv, v in verdict.items():
        print(
            f"  {lv}: default - best ({v['best_baseline']}) = {v['gap_points']:+.1f} worst-case "
            f"points (spread {v['spread_points']:.1f}, target >= +{v['target_points']}: "
            f"{'met' if v['robust_target_met'] and v['gap_resolved'] else 'not met'})"
        )
    payload = _payload(args, teacher_row=t_row, cells=cells, verdict=verdict)
    payload.update(rows=rows, missed=missed, not_run=not_run)
    payload["seconds"] = time.perf_counter() - t0
    path = write_result(name, payload)
    print(f"wrote {path}")
    return path


def _payload(args, teacher_row: Dict, cells: List[Dict], verdict: Dict) -> Dict[str, Any]:
    skip = ("plot_only", "cache_roots", "deadline", "sparsities", "cached_only")
    settings = {k: v for k, v in vars(args).items() if k not in skip}
    return {
        "benchmark": "tradeoff_structured",
        "hardware": hardware(),
        "commit": commit() or None,
        "loadavg": loadavg(),  # the 2-core VM is shared with other jobs
        "settings": settings,
        "methods": {m: METHODS[m] for m in args.methods},
        "budget": "macs=floor(teacher MACs / N) through compress_student (--budget)",
        "targets_gain": TARGET_GAIN,
        "suite": tradeoff.make_suite(args.eps, args.square).to_dict(),
        "teacher": teacher_row,
        "cells": cells,
        "targets": verdict,
        "note": "seconds per row: training time of the run (search + training); suite "
        "evaluations not included. Rows whose student misses its level are in 'missed', "
        "never in a cell.",
    }


def main(argv: Optional[List[str]] = None) -> Path:
    ap = tradeoff.parser(__doc__.splitlines()[0])
    ap.add_argument("--levels", nargs="+", default=list(LEVELS), help="MACs levels, e.g. 2x 4x.")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--name", default="tradeoff_structured")
    ap.add_argument(
        "--shape",
        default=None,
        choices=["layers", "uniform"],
        help="The MACs budget's shape (appended as ,shape=...) [default: the budget's own].",
    )
    ap.add_argument(
        "--deadline", type=float, default=None, help="Unix time: start no new student after it."
    )
    args = ap.parse_args(argv)
    if args.cached_only:
        ap.error("--cached-only is for the unstructured rows (benchmarks/tradeoff.py)")
    for lv in args.levels:
        try:
            level_factor(lv)
        except ValueError as e:
            ap.error(str(e))
    if args.quick:
        args.epochs, args.finetune_epochs = 1, 1
        args.teacher_epochs, args.seeds = min(args.teacher_epochs, 5), [0]
    return run(args, args.name)


if __name__ == "__main__":
    main()
