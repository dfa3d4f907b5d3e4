"""MCU benchmark: the robust students on TensorFlow Lite Micro (issue 26).

For MLPerf Tiny's ResNet-8 on the synthetic 32x32x3 set (teacher and students trained and
cached exactly as ``benchmarks/board.py`` does, under benchmarks/results/board_resnet8: the
teacher; unstructured prox + KD + AT students at 90 % and 95 %; structured students with 2x and
4x fewer MACs) plus an ``arena_kb`` budget student (``--arena-fraction`` of the teacher's
TFLM arena) and an ``arena_kb`` + ``tflm_flash_kb`` joint budget student (``--arena-fraction``
of the teacher's arena and ``--tflm-flash-fraction`` of its TFLM flash, both at once), each
model's ``tflite-int8`` export is bundled and benched on the ``tflm`` target:

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
        [--tflm-flash-fraction 0.25] [--joint-shape uniform] [--joint-finetune-epochs N]
        [--joint-seed 0] [--epoch-scale 1.0] [--recheck-n 500]
        [--rows joint-budget] [--out benchmarks/measured/mcu.json]
    .venv/bin/python benchmarks/mcu.py --markdown benchmarks/measured/mcu.json  # docs table

``--rows`` measures only the named rows and merges them into ``--out``, whose teacher row and
settings they are measured against (refused unless the settings match); each row records when
it was measured (``measured_utc``). An ``--out`` that does not exist yet is written anew when
``--rows`` names the teacher (e.g. a re-measurement of some rows with ``--square-n 500``).
``--recheck-n N`` benches each measured row a second time with Square, and so the worst case,
on N images and records those robust numbers under the row's ``recheck`` (a student's target
verdict on them needs the teacher re-checked on as many).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ensure_trained, hardware, jsonable, loadavg, table  # noqa: E402
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


def floor_kib(n_bytes: float) -> float:
    """``n_bytes`` in KiB, rounded down to 0.01 (a limit never above the fraction asked)."""
    return math.floor(n_bytes / 1024 * 100) / 100


def joint_student(models: Dict[str, Any], args: argparse.Namespace) -> None:
    """A student searched (channels) and trained to need at most ``args.arena_fraction`` of
    the teacher's TFLM arena and ``args.tflm_flash_fraction`` of its TFLM flash at once (one
    ``arena_kb=A,tflm_flash_kb=F`` budget), limits derived from the teacher's export."""
    from robustedge.compress import CompressConfig
    from robustedge.compress.budget import compress_to_budget, parse_budget
    from robustedge.recipe.budget_measures import BoardMeasures

    wl = WORKLOADS["resnet8"]
    teacher = models["teacher"]["run"]
    t = teacher_arena(teacher)
    arena = floor_kib(args.arena_fraction * t["arena_bytes"])
    flash = floor_kib(args.tflm_flash_fraction * t["tflm_flash_bytes"])
    text = f"arena_kb={arena:g},tflm_flash_kb={flash:g},shape={args.joint_shape}"
    budget = parse_budget(text)
    ep, ft = (scaled(e, args.epoch_scale) for e in wl["structured_epochs"])
    ft = args.joint_finetune_epochs or ft
    cfg = dict(wl["student"], teacher=str(teacher), seed=args.joint_seed, method="prox")
    cfg.update(structured=True, sparsity=0.0, epochs=ep, finetune_epochs=ft)
    cfg["include_first"] = True  # as the arena student: the stem's channels set the arena
    name = joint_name(args)
    run = cached(
        RESULTS / "board_resnet8" / name,
        {**cfg, "budget": budget.to_dict()},
        lambda out: compress_to_budget(CompressConfig(**cfg), budget, out, BoardMeasures()),
    )
    m = {"run": run, "kind": "joint-budget", "budget": text}
    finish(m, wl, args)
    models[name] = m


def joint_name(args: argparse.Namespace) -> str:
    """The joint student's row: ``joint-budget``, then ``-<shape>`` unless uniform, ``-ft<N>``
    with ``--joint-finetune-epochs`` and ``-seed<S>`` with a seed other than 0."""
    name = "joint-budget"
    if args.joint_shape != "uniform":
        name += f"-{args.joint_shape}"
    if args.joint_finetune_epochs:
        name += f"-ft{args.joint_finetune_epochs}"
    return name + (f"-seed{args.joint_seed}" if args.joint_seed else "")


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
        "budget": m.get("budget"),
        "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
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


def ok_size(r: Dict[str, Any], t: Dict[str, Any]) -> bool:
    """Row ``r`` needs at most half the teacher's arena and a quarter of its TFLM flash."""
    return r["arena_bytes"] <= t["arena_bytes"] / 2 and (
        r["tflm_flash_bytes"] <= t["tflm_flash_bytes"] / 4
    )


def targets(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Issue 26's targets, met or not (never asserted); with rows re-checked on more images
    (``recheck``), each such student's verdict on those against the teacher's."""
    t = next(r for r in rows if r["kind"] == "teacher")
    hits = []
    for r in rows:
        if r is t:
            continue
        ok = ok_size(r, t) and r["tflm_worst_case"] >= t["tflm_worst_case"] - 0.03
        hit = {"model": r["model"], "meets_all": ok}
        again, t_again = r.get("recheck"), t.get("recheck")
        if again and t_again and again["worst_case_n"] == t_again["worst_case_n"]:
            gap = t_again["tflm_worst_case"] - again["tflm_worst_case"]
            hit["recheck"] = {"images": again["worst_case_n"], "points_below_teacher": 100 * gap}
            hit["recheck"]["meets_all"] = ok_size(r, t) and gap <= 0.03
        hits.append(hit)
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


SETTINGS_KEPT = ("square_queries", "square_n", "accelerator", "epoch_scale")


def previous(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """With ``--rows``: the measured JSON the rows merge into (its teacher and settings);
    refused in one line when it is missing or was measured with other settings."""
    if not args.rows:
        return None
    if not args.out.is_file():
        if "teacher" in args.rows.split(","):
            return None  # a new file: these rows, measured against the teacher measured with them
        sys.exit(
            f"--rows merges into {args.out}, which does not exist: run all rows first "
            "(or name the teacher among --rows)"
        )
    old = json.loads(args.out.read_text())
    diff = [k for k in SETTINGS_KEPT if old["settings"].get(k) != getattr(args, k)]
    if diff:
        sys.exit(f"--rows: {args.out} was measured with other {', '.join(diff)}")
    return old


def merged(old: Optional[Dict[str, Any]], rows: List[Dict], raw: Dict) -> tuple:
    """The old payload's rows and results with the new ones in place (or appended); rows
    measured before ``measured_utc`` existed get their bundle's creation time."""
    if old is None:
        return rows, raw
    new = {r["model"]: r for r in rows}
    out = [new.pop(r["model"], r) for r in old["rows"]] + list(new.values())
    for r in out:
        if "measured_utc" not in r:
            r["measured_utc"] = old["results"][r["model"]]["bundle"]["created"]
    return out, {**old["results"], **raw}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--markdown", type=Path, help="print a measured JSON's docs table, run nothing")
    ap.add_argument("--square-queries", type=int, default=100)
    ap.add_argument("--square-n", type=int, default=100)
    ap.add_argument("--arena-fraction", type=float, default=0.5, help="0: no arena student")
    ap.add_argument("--tflm-flash-fraction", type=float, default=0.25, help="0: no joint student")
    ap.add_argument("--joint-shape", default="uniform", help="the joint student's budget shape")
    ap.add_argument(
        "--joint-finetune-epochs", type=int, default=0, help="0: the workload's fine-tune epochs"
    )
    ap.add_argument("--joint-seed", type=int, default=0, help="the joint student's seed")
    ap.add_argument(
        "--recheck-n", type=int, default=0, help="bench the rows again with Square on N images"
    )
    ap.add_argument("--rows", default="", help="only these rows (comma list), merged into --out")
    ap.add_argument("--accelerator", default="ethos-u55-128")
    ap.add_argument("--epoch-scale", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=MEASURED / "mcu.json")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    args.flash_fraction = 0.0  # board.prepare's flash student: not this benchmark's
    old = previous(args)
    import torch

    torch.set_num_threads(1)
    t0, c0 = time.time(), time.process_time()
    wanted = [n for n in args.rows.split(",") if n]
    models = build_models(args, wanted)
    unknown = [n for n in wanted if n not in models]
    if unknown:
        sys.exit(f"--rows: unknown {', '.join(unknown)} (known: {', '.join(models)})")
    rows, raw = bench_rows(models, wanted or list(models), args)
    write(args, old, rows, raw, (time.time() - t0, time.process_time() - c0))


BUDGET_ROWS = ("arena-budget", "joint-budget")


def build_models(args: argparse.Namespace, wanted: List[str]) -> Dict[str, Any]:
    """Teacher and students (cached): all of them, or with ``--rows`` naming only the teacher
    and budget students, the teacher and those (the other students are not touched)."""
    if wanted and all(n == "teacher" or n.startswith(BUDGET_ROWS) for n in wanted):
        models = {"teacher": teacher_model(args)}
    else:
        models = prepare("resnet8", args)
    if args.arena_fraction > 0 and (not wanted or "arena-budget" in wanted):
        arena_student(models, args)
    if args.arena_fraction > 0 and args.tflm_flash_fraction > 0:
        if not wanted or any(n.startswith("joint-budget") for n in wanted):
            joint_student(models, args)
    return models


def teacher_model(args: argparse.Namespace) -> Dict[str, Any]:
    """The teacher as :func:`board.prepare` makes it (trained once, cached), evaluated."""
    from robustedge.data import load_dataset
    from robustedge.models import count_macs, load_model
    from robustedge.training.config import TrainConfig

    wl = WORKLOADS["resnet8"]
    t = dict(wl["teacher"], epochs=scaled(wl["teacher"]["epochs"], args.epoch_scale))
    run = ensure_trained(
        RESULTS / "board_resnet8" / f"teacher-e{t['epochs']}", TrainConfig(data=wl["data"], **t)
    )
    shape = load_dataset(wl["data"]).input_shape
    m = {"run": run, "kind": "teacher", "macs": count_macs(load_model(run)[0], shape)["dense"]}
    finish(m, wl, args)
    return m


def bench_rows(models: Dict[str, Any], wanted: List[str], args: argparse.Namespace) -> tuple:
    """The named models benched on TFLM: (rows, raw results)."""
    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="mcu-bench-") as tmp:
        for name in wanted:
            m = models[name]
            raw[name] = bench_tflm(name, m, args, Path(tmp))
            rows.append(row(name, m, raw[name]))
            if args.recheck_n:
                rows[-1]["recheck"] = recheck(name, m, args, Path(tmp))
            print(f"{name}: done ({raw[name]['bench_wall_s']} s)", flush=True)
    return rows, raw


def recheck(name: str, m: Dict[str, Any], args: argparse.Namespace, work: Path) -> Dict:
    """The model benched again with Square, and so the worst case, on ``args.recheck_n``
    images: its robust numbers with less sampling noise (the row keeps the standard ones)."""
    again = argparse.Namespace(**{**vars(args), "square_n": args.recheck_n})
    r = bench_tflm(f"{name}-recheck", m, again, work)
    wc = r["worst_case"] or {}
    return {
        "square_n": args.recheck_n,
        "square_queries": args.square_queries,
        "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tflm_worst_case": wc.get("acc"),
        "worst_case_n": wc.get("n"),
        "worst_case_label": wc.get("label"),
        "tflm_transfer": r["accuracy"].get("transfer"),
        "tflm_square": (r["robust"] or [{}])[0].get("acc"),
        "bench_wall_s": r["bench_wall_s"],
    }


def write(args: argparse.Namespace, old: Optional[Dict], rows: List, raw: Dict, took) -> None:
    """Print the tables and write the JSON (merged into the old one with ``--rows``)."""
    rows, raw = merged(old, rows, raw)
    print_tables(rows)
    runs = list((old or {}).get("runs", []))
    if old is not None and not runs:  # the first run, before runs were recorded
        runs.append({"rows": [r["model"] for r in old["rows"]], "wall_s": old["wall_s"]})
        runs[0]["cpu_s"] = old["cpu_s"]
    measured = [
        r["model"] for r in rows if r["model"] in raw and r["model"] in args.rows.split(",")
    ]
    runs.append({
        "rows": measured or [r["model"] for r in rows],
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": round(took[0], 1), "cpu_s": round(took[1], 1), "loadavg": loadavg(),
        "settings": {**vars(args), "out": str(args.out)},
    })  # fmt: skip
    payload = {
        "benchmark": "mcu",
        "hardware": hardware(),
        "host": "2-core x86_64 VM, no GPU, shared with other jobs (loadavg per model)",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "settings": {**((old or {}).get("settings") or {}), **vars(args), "out": str(args.out)},
        "rows": rows,
        "targets": targets(rows),
        "results": raw,
        "runs": runs,
        "wall_s": round(sum(r["wall_s"] for r in runs), 1),
        "cpu_s": round(sum(r["cpu_s"] for r in runs), 1),
    }
    print(json.dumps(payload["targets"], indent=1))
    from robustedge.io import write_json

    write_json(args.out, json.loads(json.dumps(payload, default=jsonable)))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
