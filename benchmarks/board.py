"""Board benchmark: do the students beat their teacher on the board? (issue 11)

Per workload (``resnet8``: MLPerf Tiny's ResNet-8 on the synthetic 32x32x3 set with
recipes/board.yaml's settings; ``lenet5``: the demo's 4x-wide LeNet-5 on the 8x8 digits with
its PGD settings) it trains (cached under benchmarks/results/board_*) a robust teacher and

- unstructured prox + KD + AT students at 90 % and 95 % of the weights,
- structured students with 2x and 4x fewer MACs (``compress_to_budget`` with a MACs budget),
- a latency-budget student (``--budget latency_ms=<factor x teacher p50>`` on ``local``),
- a flash-budget student (``--budget flash_kb=<fraction x the teacher's xz flash bytes>``),

exports each to int8 TFLite (and the unstructured ones also to ``tflite-int8-sparse``, TFLite's
sparse tensor encoding), bundles each format plain and xz-compressed, and benches them with the
unchanged board runner: flash bytes (what the board stores), model bytes (what the interpreter
loads), peak RSS, p50/p99 latency at 1 thread on ``local`` (this host) in interleaved rounds
(teacher and students in the same round; /proc/loadavg recorded per round; the median p50 over
the rounds is reported) and once on ``qemu-aarch64`` (EMULATED: emulation cost, not a board's
latency; skipped with a note when the userland is not set up), clean and PGD accuracy
(PyTorch, the recipes' PGD settings) and the board's own clean / transfer accuracy.

Issue 11's targets are reported (met or missed, never asserted) by ``board_targets.targets``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/board.py [--workloads resnet8,lenet5]
        [--targets local,qemu-aarch64] [--rounds 3] [--runs 500] [--epoch-scale 1.0]
        [--latency-factor 0.5] [--flash-fraction 0.25] [--out JSON]
        [--emulated-only | --add-only]

``--emulated-only`` adds the qemu-aarch64 rows to the workloads already in ``--out`` (local rows
kept as measured); ``--add-only`` trains and benches the models ``--out`` lacks (interleaved
with the teacher, whose p50 of those rounds is stored beside them) and adds them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ensure_trained, hardware, jsonable, loadavg  # noqa: E402
from board_targets import print_emulated, print_tables, targets  # noqa: E402

MEASURED = Path(__file__).resolve().parent / "measured"

WORKLOADS: Dict[str, Dict[str, Any]] = {
    "resnet8": {
        "data": "synthetic32",
        "teacher": dict(
            model="resnet8", adversary="fgsm", eps=0.03, epochs=8, batch_size=128, lr=0.003
        ),
        "student": dict(adversary="fgsm", eps=0.03, kd_alpha=0.5, batch_size=128),
        "epochs": (3, 2),  # pruning, fine-tuning (unstructured)
        "structured_epochs": (3, 6),
        "pgd": dict(eps=0.03, steps=10, restarts=1),
    },
    "lenet5": {
        "data": "digits",
        "teacher": dict(  # the demo's teacher: 4x wide, 0.94M MACs
            model="lenet5", model_kwargs={"width": 4}, adversary="pgd", eps=0.1, steps=10, epochs=30
        ),
        "student": dict(adversary="pgd", eps=0.1, steps=10, kd_alpha=0.5),
        "epochs": (6, 4),
        "structured_epochs": (6, 4),
        "pgd": dict(eps=0.1, steps=20, restarts=5),
    },
}
BENCH_FORMATS = ("tflite-int8", "tflite-int8-sparse")


def scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def cached(out: Path, cfg: Dict[str, Any], make: Any) -> Path:
    """Run ``make(out)`` unless ``out`` holds a finished run made from the same ``cfg``."""
    import shutil

    stamp = out / "board_cfg.json"
    if (out / "metrics.json").is_file() and stamp.is_file():
        if json.loads(stamp.read_text()) == cfg:
            return out
    shutil.rmtree(out, ignore_errors=True)
    make(out)
    stamp.write_text(json.dumps(cfg, sort_keys=True))
    return out


def prepare(name: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Teacher and students trained (cached), evaluated and exported; returns the models."""
    from robustedge.compress import CompressConfig, compress_run
    from robustedge.compress.budget import Budget, compress_to_budget
    from robustedge.data import load_dataset
    from robustedge.models import count_macs, load_model
    from robustedge.training.config import TrainConfig

    wl = WORKLOADS[name]
    root = RESULTS / f"board_{name}"
    t = dict(wl["teacher"], epochs=scaled(wl["teacher"]["epochs"], args.epoch_scale))
    teacher = ensure_trained(root / f"teacher-e{t['epochs']}", TrainConfig(data=wl["data"], **t))
    shape = load_dataset(wl["data"]).input_shape
    teacher_macs = count_macs(load_model(teacher)[0], shape)["dense"]
    models: Dict[str, Dict[str, Any]] = {
        "teacher": {"run": teacher, "kind": "teacher", "macs": teacher_macs}
    }
    base = dict(wl["student"], teacher=str(teacher), seed=0)
    ep, ft = (scaled(e, args.epoch_scale) for e in wl["epochs"])
    for sp in (0.9, 0.95):
        cfg = dict(base, method="prox", sparsity=sp, epochs=ep, finetune_epochs=ft)
        run = cached(
            root / f"prox-s{sp:g}",
            cfg,
            lambda out, cfg=cfg: compress_run(CompressConfig(**cfg), out),
        )
        models[f"prox-s{sp:g}"] = {"run": run, "kind": "unstructured"}
    ep, ft = (scaled(e, args.epoch_scale) for e in wl["structured_epochs"])
    for factor in (2, 4):
        limit = teacher_macs / factor
        cfg = dict(base, method="prox", structured=True, sparsity=0.0, epochs=ep)
        cfg["finetune_epochs"] = ft
        budget = Budget("macs", limit)  # type: ignore[arg-type]
        run = cached(
            root / f"structured-{factor}x",
            {**cfg, "budget": budget.to_dict()},
            lambda out, cfg=cfg, b=budget: compress_to_budget(CompressConfig(**cfg), b, out),
        )
        models[f"structured-{factor}x"] = {"run": run, "kind": "structured"}
    for m in models.values():
        finish(m, wl, args)
    if args.flash_fraction > 0:
        flash_budget_student(name, models, args)
    return models


def flash_budget_student(name: str, models: Dict[str, Any], args: argparse.Namespace) -> None:
    """A student searched and trained to store at most ``args.flash_fraction`` of the
    teacher's flash bytes (its int8 file xz-compressed, from the teacher's export ledger); the
    budget's own record holds the measured bytes of the student's export."""
    from robustedge.compress import CompressConfig
    from robustedge.compress.budget import Budget, compress_to_budget
    from robustedge.recipe.budget_measures import BoardMeasures

    wl = WORKLOADS[name]
    teacher = models["teacher"]["run"]
    ledger = json.loads((teacher / "export" / "ledger.json").read_text())
    row = next(r for r in ledger["stages"] if r.get("format") == "tflite-int8")
    limit = round(args.flash_fraction * row["flash_bytes"] / 1024, 2)
    budget = Budget("flash_kb", limit)  # type: ignore[arg-type]
    ep, ft = (scaled(e, args.epoch_scale) for e in wl["structured_epochs"])
    cfg = dict(wl["student"], teacher=str(teacher), seed=0, method="prox")
    cfg.update(structured=True, sparsity=0.0, epochs=ep, finetune_epochs=ft)
    run = cached(
        RESULTS / f"board_{name}" / "flash-budget",
        {**cfg, "budget": budget.to_dict()},
        lambda out: compress_to_budget(CompressConfig(**cfg), budget, out, BoardMeasures()),
    )
    m = {"run": run, "kind": "flash-budget"}
    finish(m, wl, args)
    models["flash-budget"] = m


def finish(model: Dict[str, Any], wl: Dict[str, Any], args: argparse.Namespace) -> None:
    """PGD evaluation (PyTorch) and the export, both cached in the run folder."""
    from robustedge.errors import RobustEdgeError
    from robustedge.export import ExportConfig, export_run
    from robustedge.training.evaluate import EvalPlan
    from robustedge.training.run import eval_run

    run: Path = model["run"]
    pgd = wl["pgd"]
    plan = EvalPlan(
        attacks=("pgd",), eps=(pgd["eps"],), pgd_steps=pgd["steps"], restarts=pgd["restarts"]
    )
    ev = run / "eval.json"
    result = json.loads(ev.read_text()) if ev.is_file() else eval_run(run, plan, seed=0)
    model["clean"] = result.get("clean_acc")
    model["pgd"] = next((r["acc"] for r in result.get("robust", []) if r["attack"] == "pgd"), None)
    model["pgd_setting"] = f"PGD-{pgd['steps']}x{pgd['restarts']} eps {pgd['eps']:g}"
    metrics = json.loads((run / "metrics.json").read_text())
    model["macs"] = (metrics.get("macs") or {}).get("dense") or model.get("macs")
    model["params"] = metrics.get("params")
    model["budget"] = metrics.get("budget")
    formats = ["onnx", "tflite-int8"] + (
        ["tflite-int8-sparse"] if model["kind"] == "unstructured" else []
    )
    manifest = run / "export" / "export.json"
    have = json.loads(manifest.read_text())["artifacts"] if manifest.is_file() else {}
    model["export_error"] = None
    for _ in range(2):  # a second try without the sparse format when it fails its gate
        if all(f in have for f in formats):
            break
        try:
            cfg = ExportConfig(
                formats=formats,
                clean_margin=2.0,
                robust_margin=3.0,
                transfer_steps=pgd["steps"],
                transfer_restarts=1,
            )
            export_run(run, cfg)
        except RobustEdgeError as e:  # a parity failure is a result too: retry without sparse
            model["export_error"] = f"{', '.join(formats)}: {e}"
            if "tflite-int8-sparse" not in formats:
                break
            formats = [f for f in formats if f != "tflite-int8-sparse"]
            continue
        have = json.loads(manifest.read_text())["artifacts"] if manifest.is_file() else {}
        break
    have = json.loads(manifest.read_text())["artifacts"] if manifest.is_file() else {}
    model["formats"] = [f for f in BENCH_FORMATS if f in have]


def bundle(run: Path, fmt: str, where: Path, codec: Optional[str]) -> Path:
    from robustedge.device.host.bundle import NO_CODEC, BundleConfig, build_bundle

    cfg = BundleConfig(formats=(fmt,), codec=codec or NO_CODEC)
    return build_bundle(run, where / f"{run.name}-{fmt}-{codec or 'plain'}", cfg)


def sizes(run: Path, fmt: str) -> Dict[str, int]:
    """Bytes of the exported file stored plain, gzip -9 and xz (what the bundles carry)."""
    export = json.loads((run / "export" / "export.json").read_text())["artifacts"][fmt]
    raw = (run / "export" / export["file"]).read_bytes()
    return {
        "plain": len(raw),
        "gzip": len(gzip.compress(raw, 9)),
        "xz": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)),
    }


def bench(b: Path, target: str, fmt: str, runs: int) -> Dict[str, Any]:
    from robustedge.device.host.targets import make_target

    args = ["--format", fmt, "--threads", "1", "--runs", str(runs), "--square-queries", "0"]
    return make_target(target).bench(b, args)


def row_of(r: Dict[str, Any]) -> Dict[str, Any]:
    lat = r.get("latency") or {}
    return {
        "p50_ms": lat.get("p50_ms"),
        "p99_ms": lat.get("p99_ms"),
        "peak_rss_mb": r.get("peak_rss_mb"),
        "flash_bytes": r.get("flash_bytes"),
        "model_bytes": r.get("model_bytes"),
        "board_accuracy": r.get("accuracy"),
        "emulated": r.get("emulated"),
    }


def latency_budget_student(
    name: str, models: Dict[str, Any], limit: float, args: argparse.Namespace
) -> None:
    """A student searched and trained to meet ``limit`` ms (``args.latency_factor`` x the
    teacher's p50)."""
    from robustedge.compress import CompressConfig
    from robustedge.compress.budget import Budget, compress_to_budget
    from robustedge.recipe.budget_measures import BoardMeasures

    wl = WORKLOADS[name]
    budget = Budget("latency_ms", limit, "local")  # type: ignore[arg-type]
    ep, ft = (scaled(e, args.epoch_scale) for e in wl["structured_epochs"])
    cfg = dict(wl["student"], teacher=str(models["teacher"]["run"]), seed=0, method="prox")
    cfg.update(structured=True, sparsity=0.0, epochs=ep, finetune_epochs=ft)
    run = cached(
        RESULTS / f"board_{name}" / "latency-budget",
        {**cfg, "budget": budget.to_dict()},
        lambda out: compress_to_budget(CompressConfig(**cfg), budget, out, BoardMeasures()),
    )
    m = {"run": run, "kind": "latency-budget"}
    finish(m, wl, args)
    models["latency-budget"] = m


def measure_workload(name: str, args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    t0, c0 = time.time(), time.process_time()
    models = prepare(name, args)
    # one quick teacher bench sets the latency budget
    if args.latency_factor > 0:
        b = bundle(models["teacher"]["run"], "tflite-int8", work / name / "probe", "xz")
        p50 = float(bench(b, "local", "tflite-int8", args.runs)["latency"]["p50_ms"])
        latency_budget_student(name, models, round(args.latency_factor * p50, 4), args)
    bundles = {}
    for key, m in models.items():
        m["sizes"] = {f: sizes(m["run"], f) for f in m["formats"]}
        for f in m["formats"]:
            bundles[(key, f)] = bundle(m["run"], f, work / name, "xz")
    local: Dict[Any, List[Dict[str, Any]]] = {k: [] for k in bundles}
    rounds = []
    for i in range(args.rounds):  # interleaved: every model once per round
        rounds.append({"round": i, "loadavg_before": loadavg()})
        for k, b in bundles.items():
            local[k].append(row_of(bench(b, "local", k[1], args.runs)))
        rounds[-1]["loadavg_after"] = loadavg()
    emulated = emulated_rows(bundles, args)
    out_models = {}
    for key, m in models.items():
        entry = {k: v for k, v in m.items() if k not in ("run",)}
        entry["run"] = str(m["run"].relative_to(RESULTS.parent))
        entry["local"] = {}
        for f in m["formats"]:
            rows = local[(key, f)]
            p50s = [r["p50_ms"] for r in rows if r["p50_ms"] is not None]
            p99s = [r["p99_ms"] for r in rows if r["p99_ms"] is not None]
            entry["local"][f] = {
                **rows[-1],
                "p50_ms": statistics.median(p50s) if p50s else None,
                "p99_ms": statistics.median(p99s) if p99s else None,
                "p50_ms_rounds": p50s,
                "peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in rows),
            }
        out_models[key] = entry
    return {
        "models": out_models,
        "rounds": rounds,
        "emulated_qemu_aarch64": emulated,
        "targets": targets(name, out_models),
        "wall_s": round(time.time() - t0, 1),
        "cpu_s_main_process": round(time.process_time() - c0, 1),
    }


def emulated_rows(bundles: Dict[Any, Path], args: argparse.Namespace) -> Dict[str, Any]:
    """One bench per bundle on qemu-aarch64 (EMULATED), or a note saying why not."""
    emulated: Dict[str, Any] = {"note": None}
    if "qemu-aarch64" not in args.targets:
        return emulated
    t0 = time.time()
    try:
        from robustedge.device.host.targets import make_target

        make_target("qemu-aarch64")
        for k, b in bundles.items():
            emulated[f"{k[0]} {k[1]}"] = row_of(bench(b, "qemu-aarch64", k[1], 200))
    except Exception as e:  # not set up here: a note, not a failure
        emulated["note"] = f"qemu-aarch64 skipped: {str(e).splitlines()[0]}"
    emulated["wall_s"] = round(time.time() - t0, 1)
    emulated["loadavg_after"] = loadavg()
    return emulated


def emulate_only(name: str, args: argparse.Namespace, work: Path, old: Dict[str, Any]) -> None:
    """Add the qemu-aarch64 rows to a workload already measured locally (``old``, from
    ``--out``), leaving its local rows as they were measured: the cached runs are bundled
    again (the latency-budget student keeps the limit recorded in ``old``)."""
    models = prepare(name, args)
    lb = (old["models"].get("latency-budget") or {}).get("budget")
    if lb:
        latency_budget_student(name, models, float(lb["limit"]), args)
    bundles = {
        (key, f): bundle(m["run"], f, work / name, "xz")
        for key, m in models.items()
        for f in m["formats"]
        if f in old["models"].get(key, {}).get("local", {})
    }
    old["emulated_qemu_aarch64"] = emulated_rows(bundles, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="resnet8,lenet5")
    ap.add_argument("--targets", default="local,qemu-aarch64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--epoch-scale", type=float, default=1.0, help="multiply every epoch count")
    ap.add_argument("--latency-factor", type=float, default=0.5, help="0: no latency budget")
    ap.add_argument("--out", type=Path, default=MEASURED / "board.json")
    ap.add_argument(
        "--flash-fraction",
        type=float,
        default=0.25,
        help="flash-budget student: this share of the teacher's flash bytes (0: none)",
    )
    ap.add_argument(
        "--add-only",
        action="store_true",
        help="bench only the models --out lacks (with the teacher, interleaved) and add them",
    )
    ap.add_argument(
        "--emulated-only",
        action="store_true",
        help="add the qemu-aarch64 rows to the workloads already in --out (local rows kept)",
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.emulated_only:
        return add_emulated(args)
    if args.add_only:
        return add_models(args)
    payload: Dict[str, Any] = {
        "benchmark": "board",
        "hardware": hardware(),
        "host": "2-core AMD EPYC x86_64 VM shared with other jobs (see loadavg per round)",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "settings": {**vars(args), "out": str(args.out)},
        "workloads": {},
    }
    t0, c0 = time.time(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="board-bench-") as tmp:
        for name in args.workloads.split(","):
            payload["workloads"][name] = measure_workload(name, args, Path(tmp))
            print_tables(name, payload["workloads"][name])
    payload["wall_s"] = round(time.time() - t0, 1)
    payload["cpu_s"] = round(time.process_time() - c0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from robustedge.io import write_json

    write_json(args.out, json.loads(json.dumps(payload, default=jsonable)))
    print(f"\nwrote {args.out}")


def add_emulated(args: argparse.Namespace) -> None:
    """``--emulated-only``: qemu-aarch64 rows added to the measured JSON in ``--out``."""
    from robustedge.io import write_json

    payload = json.loads(args.out.read_text())
    with tempfile.TemporaryDirectory(prefix="board-bench-") as tmp:
        for name in args.workloads.split(","):
            old = payload["workloads"][name]
            emulate_only(name, args, Path(tmp), old)
            note = old["emulated_qemu_aarch64"].get("note")
            print(f"{name}: qemu-aarch64 " + (note or "rows added"))
            print_emulated(name, old)
    payload["settings"]["targets"] = "local,qemu-aarch64"
    payload["settings"]["emulated_added_later"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write_json(args.out, json.loads(json.dumps(payload, default=jsonable)))
    print(f"\nwrote {args.out}")


def add_models(args: argparse.Namespace) -> None:
    """``--add-only``: the models a workload in ``--out`` lacks (e.g. the flash-budget student)
    trained, benched on local interleaved with the teacher (whose p50 of these rounds is kept
    beside them) and on qemu-aarch64, and added; the rows already there are left as measured."""
    from robustedge.io import write_json

    payload = json.loads(args.out.read_text())
    with tempfile.TemporaryDirectory(prefix="board-bench-") as tmp:
        work = Path(tmp)
        for name in args.workloads.split(","):
            old = payload["workloads"][name]
            models = prepare(name, args)
            new = [k for k in models if k not in old["models"] and k != "latency-budget"]
            bundles = {}
            for key in ["teacher", *new]:
                m = models[key]
                m["sizes"] = {f: sizes(m["run"], f) for f in m["formats"]}
                for f in m["formats"]:
                    bundles[(key, f)] = bundle(m["run"], f, work / name, "xz")
            rows: Dict[Any, List[Dict[str, Any]]] = {k: [] for k in bundles}
            loads = []
            for _ in range(args.rounds):
                loads.append(loadavg())
                for k, b in bundles.items():
                    rows[k].append(row_of(bench(b, "local", k[1], args.runs)))
            emulated = emulated_rows({k: b for k, b in bundles.items() if k[0] != "teacher"}, args)
            for key in new:
                m = models[key]
                entry = {k: v for k, v in m.items() if k != "run"}
                entry["run"] = str(m["run"].relative_to(RESULTS.parent))
                entry["added_later"] = {
                    "loadavg_per_round": loads,
                    "teacher_p50_ms_same_rounds": statistics.median(
                        r["p50_ms"] for r in rows[("teacher", "tflite-int8")]
                    ),
                }
                entry["local"] = {
                    f: {
                        **rows[(key, f)][-1],
                        "p50_ms": statistics.median(r["p50_ms"] for r in rows[(key, f)]),
                        "p99_ms": statistics.median(r["p99_ms"] for r in rows[(key, f)]),
                        "p50_ms_rounds": [r["p50_ms"] for r in rows[(key, f)]],
                        "peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in rows[(key, f)]),
                    }
                    for f in m["formats"]
                }
                old["models"][key] = entry
                em = old.setdefault("emulated_qemu_aarch64", {"note": None})
                for k, v in emulated.items():
                    if k.startswith(f"{key} "):
                        em[k] = v
            old["targets"] = targets(name, old["models"])
            print_tables(name, old)
    write_json(args.out, json.loads(json.dumps(payload, default=jsonable)))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
