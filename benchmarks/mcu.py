"""MCU benchmark: the robust students on TensorFlow Lite Micro (issue 26).

For MLPerf Tiny's ResNet-8 on the synthetic 32x32x3 set (teacher and students trained and
cached exactly as ``benchmarks/board.py`` does, under benchmarks/results/board_resnet8: the
teacher; unstructured prox + KD + AT students at 90 % and 95 %; structured students with 2x and
4x fewer MACs) plus an ``arena_kb`` budget student (``--arena-fraction`` of the teacher's
TFLM arena), each model's ``tflite-int8`` export is bundled and benched on the ``tflm`` target:

- arena: the smallest tensor arena the TFLM interpreter runs the model in (and what its
  recording allocator recorded: head = tensors, tail = persistent structs, 64-bit host build);
- TFLM flash: the plain ``.tflite`` bytes, and with TFLM's LUT weight compression;
- ops against TFLM's kernels;
- clean, PGD-transfer and on-interpreter Square accuracy under TFLM, worst case per image
  (Square budget as given: below Square-1000 on every image the label says "weaker than
  default"); PyTorch's clean / PGD beside them;
- parity: TFLM's int8 outputs against the TFLite interpreter (BUILTIN_REF) on every image;
- vela's Ethos-U estimate (``--accelerator``): SRAM, flash, cycles, time (an estimate).

Issue 26's targets are reported, never asserted: a student with arena <= 1/2 and TFLM flash
<= 1/4 of the teacher's and robust accuracy (worst case under TFLM) within 3 points of the
teacher's; TFLM and TFLite agreeing on >= 99 % of the evaluation images.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mcu.py [--square-queries 100]
        [--square-n 100] [--arena-fraction 0.5] [--accelerator ethos-u55-128]
        [--epoch-scale 1.0] [--out benchmarks/measured/mcu.json]
    .venv/bin/python benchmarks/mcu.py --markdown benchmarks/measured/mcu.json  # docs table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, hardware, jsonable, loadavg, table  # noqa: E402
from board import WORKLOADS, cached, finish, prepare, scaled  # noqa: E402

MEASURED = Path(__file__).resolve().parent / "measured"
FORMAT = "tflite-int8"
MCU_CLASSES = {"256K SRAM / 1M flash": (256, 1024), "256K SRAM / 512K flash": (256, 512)}


def teacher_arena(teacher: Path) -> Dict[str, Any]:
    from robustedge.recipe.budget_measures import tflm_arena

    return tflm_arena(teacher / "export" / "model_int8.tflite")


def arena_student(models: Dict[str, Any], args: argparse.Namespace) -> None:
    """A student searched (channels) and trained to need at most ``args.arena_fraction`` of
    the teacher's TFLM arena, each candidate measured by TFLM on its export."""
    from robustedge.compress import CompressConfig
    from robustedge.compress.budget import Budget, compress_to_budget
    from robustedge.recipe.budget_measures import BoardMeasures

    wl = WORKLOADS["resnet8"]
    teacher = models["teacher"]["run"]
    limit = round(args.arena_fraction * teacher_arena(teacher)["arena_bytes"] / 1024, 2)
    budget = Budget("arena_kb", limit)  # type: ignore[arg-type]
    ep, ft = (scaled(e, args.epoch_scale) for e in wl["structured_epochs"])
    cfg = dict(wl["student"], teacher=str(teacher), seed=0, method="prox")
    cfg.update(structured=True, sparsity=0.0, epochs=ep, finetune_epochs=ft)
    cfg["include_first"] = True  # the stem's channels (and the stream tied to them) set the arena
    run = cached(
        RESULTS / "board_resnet8" / f"arena-budget-{args.arena_fraction:g}",
        {**cfg, "budget": budget.to_dict()},
        lambda out: compress_to_budget(CompressConfig(**cfg), budget, out, BoardMeasures()),
    )
    m = {"run": run, "kind": "arena-budget"}
    finish(m, wl, args)
    models["arena-budget"] = m


def bench_tflm(name: str, m: Dict[str, Any], args: argparse.Namespace, work: Path) -> Dict:
    """The model's int8 export bundled and benched on the tflm target."""
    from robustedge.device.board.config import BenchConfig
    from robustedge.device.host.bundle import BundleConfig, build_bundle
    from robustedge.device.host.targets import make_target

    b = build_bundle(m["run"], work / name, BundleConfig(formats=(FORMAT,)))
    cfg = BenchConfig(format=FORMAT, square_queries=args.square_queries, square_n=args.square_n)
    t0 = time.time()
    res = make_target(f"tflm:{args.accelerator}").bench(b, cfg)
    res["bench_wall_s"] = round(time.time() - t0, 1)
    res["loadavg"] = loadavg()
    return res


def row(name: str, m: Dict[str, Any], r: Dict[str, Any]) -> Dict[str, Any]:
    mcu, wc = r["mcu"], r["worst_case"] or {}
    par = mcu["parity"]
    eth = mcu["ethos_u"]
    return {
        "model": name,
        "kind": m["kind"],
        "macs": m.get("macs"),
        "torch_clean": m.get("clean"),
        "torch_pgd": m.get("pgd"),
        "pgd_setting": m.get("pgd_setting"),
        "tflm_clean": r["accuracy"].get("clean"),
        "tflm_transfer": r["accuracy"].get("transfer"),
        "tflm_square": (r["robust"] or [{}])[0].get("acc"),
        "tflm_worst_case": wc.get("acc"),
        "worst_case_label": wc.get("label"),
        "weaker": wc.get("weaker"),
        "worst_case_n": wc.get("n"),
        "arena_bytes": mcu["arena"]["arena_bytes"],
        "arena_recorded": mcu["arena"]["recorded_bytes"],
        "arena_head": mcu["arena"]["head_bytes"],
        "tflm_flash_bytes": mcu["flash"]["tflm_flash_bytes"],
        "lut_flash_bytes": mcu["flash"]["lut_flash_bytes"],
        "lut_identical": mcu["flash"]["lut"].get("identical_outputs"),
        "ops": mcu["ops"]["line"],
        "parity_same_class": min(par[s]["same_class"] for s in par if isinstance(par[s], dict)),
        "parity_bit_identical": min(
            par[s]["bit_identical"] for s in par if isinstance(par[s], dict)
        ),
        "vela": eth,
        "fits": {
            k: mcu["arena"]["arena_bytes"] <= s * 1024
            and mcu["flash"]["tflm_flash_bytes"] <= f * 1024
            for k, (s, f) in MCU_CLASSES.items()
        },
    }


def targets(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Issue 26's targets, met or not (never asserted)."""
    t = next(r for r in rows if r["kind"] == "teacher")
    hits = []
    for r in rows:
        if r is t:
            continue
        ok = (
            r["arena_bytes"] <= t["arena_bytes"] / 2
            and r["tflm_flash_bytes"] <= t["tflm_flash_bytes"] / 4
            and r["tflm_worst_case"] >= t["tflm_worst_case"] - 0.03
        )
        hits.append({"model": r["model"], "meets_all": ok})
    return {
        "student_half_arena_quarter_flash_within_3pts": any(h["meets_all"] for h in hits),
        "per_student": hits,
        "parity_99": all(r["parity_same_class"] >= 0.99 for r in rows),
    }


def print_tables(rows: List[Dict[str, Any]]) -> None:
    head = [
        "model",
        "arena B",
        "head B",
        "flash B",
        "LUT B",
        "clean",
        "transfer",
        "square",
        "worst",
        "parity",
        "vela SRAM",
        "vela flash",
        "vela ms",
    ]
    print(table(head, [
        [r["model"], r["arena_bytes"], r["arena_head"], r["tflm_flash_bytes"],
         r["lut_flash_bytes"], r["tflm_clean"], r["tflm_transfer"], r["tflm_square"],
         r["tflm_worst_case"], r["parity_same_class"], r["vela"].get("sram_bytes"),
         r["vela"].get("flash_bytes"), r["vela"].get("time_ms")]
        for r in rows
    ]))  # fmt: skip
    print(rows[0]["worst_case_label"], "|", rows[0]["weaker"])


def _kb(v: Any) -> str:
    return "-" if v is None else f"{v / 1024:.1f}"


def markdown(payload: Dict[str, Any]) -> str:
    """The measured JSON as the Markdown table docs/mcu.md quotes (nothing re-measured)."""
    head = "| model | arena KiB | TFLM flash KiB | LUT KiB | clean | PGD transfer | Square | "
    head += "worst case | parity | vela SRAM / flash KiB, est. ms | fits |"
    lines = [head, "|" + "---|" * 11]
    for r in payload["rows"]:
        v = r["vela"] or {}
        est = f"{_kb(v.get('sram_bytes'))} / {_kb(v.get('flash_bytes'))}, {v.get('time_ms')}"
        cells = [r["model"], _kb(r["arena_bytes"]), _kb(r["tflm_flash_bytes"])]
        cells += [_kb(r["lut_flash_bytes"]), r["tflm_clean"], r["tflm_transfer"]]
        cells += [r["tflm_square"], r["tflm_worst_case"], r["parity_same_class"], est]
        cells.append(", ".join(k for k, ok in r["fits"].items() if ok) or "none")
        lines.append("| " + " | ".join(_fmt_cell(c) for c in cells) + " |")
    t, s = payload["targets"], payload["settings"]
    lines += [
        "",
        f"Robustness: {payload['rows'][0]['worst_case_label']} ({payload['rows'][0]['weaker']});"
        f" Square {s['square_queries']} queries on {s['square_n']} images. Targets: a student"
        " with half the arena, a quarter of the flash and worst case within 3 points: "
        f"{t['student_half_arena_quarter_flash_within_3pts']}; TFLM = TFLite class on >= 99 %"
        f" of images for every model: {t['parity_99']}. Wall {payload['wall_s']} s.",
    ]
    return "\n".join(lines)


def _fmt_cell(c: Any) -> str:
    return f"{c:.3f}" if isinstance(c, float) else str(c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--markdown", type=Path, help="print a measured JSON's docs table, run nothing")
    ap.add_argument("--square-queries", type=int, default=100)
    ap.add_argument("--square-n", type=int, default=100)
    ap.add_argument("--arena-fraction", type=float, default=0.5, help="0: no arena student")
    ap.add_argument("--accelerator", default="ethos-u55-128")
    ap.add_argument("--epoch-scale", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=MEASURED / "mcu.json")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    args.flash_fraction = 0.0  # board.prepare's flash student: not this benchmark's
    import torch

    torch.set_num_threads(1)
    t0, c0 = time.time(), time.process_time()
    models = prepare("resnet8", args)
    if args.arena_fraction > 0:
        arena_student(models, args)
    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="mcu-bench-") as tmp:
        for name, m in models.items():
            raw[name] = bench_tflm(name, m, args, Path(tmp))
            rows.append(row(name, m, raw[name]))
            print(f"{name}: done ({raw[name]['bench_wall_s']} s)", flush=True)
    print_tables(rows)
    payload = {
        "benchmark": "mcu",
        "hardware": hardware(),
        "host": "2-core x86_64 VM, no GPU, shared with other jobs (loadavg per model)",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "settings": {**vars(args), "out": str(args.out)},
        "rows": rows,
        "targets": targets(rows),
        "results": raw,
        "wall_s": round(time.time() - t0, 1),
        "cpu_s": round(time.process_time() - c0, 1),
    }
    print(json.dumps(payload["targets"], indent=1))
    from robustedge.io import write_json

    write_json(args.out, json.loads(json.dumps(payload, default=jsonable)))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
