"""Diagnosis runs: why ADMM beats the default prox+KD+AT at high sparsity (issue 12).

Runs named variants (CompressConfig overrides) of the trade-off benchmark's setting (same
teacher, PGD-5 training, eps 0.1, ``--epochs`` + ``--finetune-epochs``) over seeds, and
records for each run: clean accuracy, PGD-20 x 5 restarts, APGD-CE-100, APGD-DLR-100 and the
worst case per image over those three (``--square`` adds Square-1000 to the suite), the
per-layer sparsity each method ends with, and the method's notes. Prints a table of mean and
std over seeds and writes ``benchmarks/results/<name>.json`` (copy it to
``benchmarks/measured/`` to keep it). Results are cached per run folder.

    .venv/bin/python benchmarks/compression_diagnosis.py --teacher RUN \
        --variants prox admm prox-noKD --sparsities 0.95 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, hardware, table, write_result  # noqa: E402

# name -> CompressConfig overrides (method and settings); the rest is the shared setting
VARIANTS = {
    "prox": {"method": "prox"},
    "prox-T1": {"method": "prox", "kd_temp": 1.0},
    "prox-noKD": {"method": "prox", "kd_alpha": 0.0},
    "prox-noKD-l0": {"method": "prox", "kd_alpha": 0.0, "penalty": "l0"},
    "prox-noKD-layer": {"method": "prox", "kd_alpha": 0.0, "scope": "layer"},
    "admm": {"method": "admm"},
    "admm-layer": {"method": "admm", "scope": "layer"},
    "magnitude": {"method": "magnitude"},
    "gmp": {"method": "gmp"},
    "gmp-layer": {"method": "gmp", "scope": "layer"},
    "gmp-plain": {"method": "gmp", "adversary": "none", "scope": "layer"},
    "hydra": {"method": "hydra"},
}


def add_variant(spec: str) -> str:
    """``name=key:value,key:value`` defines a variant on the command line."""
    name, _, rest = spec.partition("=")
    if rest:
        kw = {}
        for item in rest.split(","):
            k, _, v = item.partition(":")
            for cast in (int, float):
                try:
                    v = cast(v)
                    break
                except ValueError:
                    pass
            else:
                v = {"true": True, "false": False, "none": None}.get(v.lower(), v)
            kw[k] = v
        VARIANTS[name] = kw
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant '{name}' (known: {', '.join(VARIANTS)})")
    return name


def run_one(args, teacher: Path, variant: str, sparsity: float, seed: int, root: Path) -> dict:
    import torch

    from robustedge.attacks import AttackSpec
    from robustedge.attacks.suite import AttackSuite, worst_case_accuracy
    from robustedge.compress import CompressConfig, compress_run
    from robustedge.io import read_json, write_json
    from robustedge.models import load_model

    out = root / f"{variant}_{sparsity:g}_e{args.epochs}+{args.finetune_epochs}_s{seed}"
    if not (out / "metrics.json").is_file():
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        kw = {
            "adversary": "pgd",
            "eps": args.eps,
            "steps": args.steps,
            **VARIANTS[variant],
        }
        cfg = CompressConfig(
            teacher=str(teacher),
            sparsity=sparsity,
            epochs=args.epochs,
            finetune_epochs=args.finetune_epochs,
            seed=seed,
            **kw,
        )
        compress_run(cfg, out, eval_attacks=())
    m = read_json(out / "metrics.json")
    specs = [
        AttackSpec("pgd", args.eps, steps=20, restarts=5),
        AttackSpec("apgd-ce", args.eps, steps=100),
        AttackSpec("apgd-dlr", args.eps, steps=100),
    ]
    if args.square:
        specs.append(AttackSpec("square", args.eps, steps=1000))
    suite = AttackSuite("white-box" + ("+square" if args.square else ""), tuple(specs))
    cache = out / f"suite_{suite.name}_{args.eps:g}.json"
    if not cache.is_file():
        model, _ = load_model(out)
        data = _data(teacher)
        res = worst_case_accuracy(
            model.eval(), torch.as_tensor(data.x_test), torch.as_tensor(data.y_test), suite
        )
        write_json(cache, res.to_dict())
    res = read_json(cache)
    acc = {r["attack"]: r["acc"] for r in res["per_attack"]}
    layers = {k: round(v["sparsity"], 4) for k, v in m["sparsity"]["layers"].items()}
    return {
        "variant": variant,
        "settings": VARIANTS[variant],
        "sparsity": sparsity,
        "seed": seed,
        "clean": res["clean_acc"],
        "pgd": acc["pgd"],
        "apgd_ce": acc["apgd-ce"],
        "apgd_dlr": acc["apgd-dlr"],
        "square": acc.get("square"),
        "worst": res["worst_case_acc"],
        "suite": res["suite"],
        "layers": layers,
        "notes": {k: v for k, v in m.get("notes", {}).items() if not isinstance(v, list)},
        "seconds": m.get("seconds"),
    }


_DATA = {}


def _data(teacher: Path):
    if "d" not in _DATA:
        from robustedge.compress import CompressConfig
        from robustedge.compress.pipeline import load_teacher

        _DATA["d"] = load_teacher(CompressConfig(teacher=str(teacher)))[3]
    return _DATA["d"]


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--variants", nargs="+", default=["prox", "admm"])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.95])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=5, help="PGD steps in training.")
    ap.add_argument("--square", action="store_true", help="Add Square-1000 to the suite.")
    ap.add_argument("--name", default="compression_diagnosis")
    args = ap.parse_args()
    args.variants = [add_variant(v) for v in args.variants]
    teacher = Path(args.teacher)
    root = RESULTS / "diagnosis" / teacher.resolve().name
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    for sparsity in args.sparsities:
        for variant in args.variants:
            for seed in args.seeds:
                r = run_one(args, teacher, variant, sparsity, seed, root)
                rows.append(r)
                print(
                    f"  {variant} @ {sparsity:g} s{seed}: clean {100 * r['clean']:.1f} "
                    f"PGD {100 * r['pgd']:.1f} APGD-CE {100 * r['apgd_ce']:.1f} "
                    f"APGD-DLR {100 * r['apgd_dlr']:.1f} worst {100 * r['worst']:.1f} "
                    f"layers {r['layers']}",
                    flush=True,
                )
    summary, trows = [], []
    for sparsity in args.sparsities:
        for variant in args.variants:
            at = [r for r in rows if r["variant"] == variant and r["sparsity"] == sparsity]
            cell = {"variant": variant, "sparsity": sparsity, "seeds": [r["seed"] for r in at]}
            for k in ("clean", "pgd", "apgd_ce", "apgd_dlr", "square", "worst"):
                m, s = mean_std([r[k] for r in at])
                cell[k], cell[f"{k}_std"] = m, s
            summary.append(cell)
            trows.append(
                [f"{sparsity:g}", variant, len(at)]
                + [
                    "-" if cell[k] is None else f"{100 * cell[k]:.1f}±{100 * cell[k + '_std']:.1f}"
                    for k in ("clean", "pgd", "apgd_ce", "apgd_dlr", "worst")
                ]
            )
    hw = hardware()
    print(
        f"teacher {teacher}; eps {args.eps}; PGD-{args.steps} training; "
        f"{args.epochs}+{args.finetune_epochs} epochs; mean±std over seeds; "
        f"host {hw['cpu']} ({hw['cores']} cores)"
    )
    headers = ["sparsity", "variant", "n", "clean", "PGD-20x5", "APGD-CE", "APGD-DLR", "worst"]
    print(table(headers, trows))
    payload = {
        "benchmark": "compression_diagnosis",
        "hardware": hw,
        "settings": vars(args),
        "variants": {v: VARIANTS[v] for v in args.variants},
        "summary": summary,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
