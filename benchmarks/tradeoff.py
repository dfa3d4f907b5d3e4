"""Trade-off benchmark: clean and worst-case robust accuracy vs sparsity per method, over seeds.

Same teacher (a LeNet-5 trained with PGD inside the benchmark, or ``--teacher RUN``), same
training adversary (PGD-``--steps``, Linf eps ``--eps``), same epoch budget (pruning phase +
fine-tune; magnitude, which has no pruning phase, fine-tunes for the whole budget) for every
method and seed. Each student is evaluated on the whole test set with the white-box suite:
PGD-20 x 5 restarts, APGD-CE-100 and APGD-DLR-100, and the worst case per image over them
(an image is robust only if every attack fails; ``--square`` adds Square-1000 to the suite).
Every cell is the mean and sample std over ``--seeds`` (the student's seed; one teacher).

Methods (``METHODS``; baselines train with cross-entropy as in their papers, all with PGD-AT
unless stated):
- ``default``: what `robustedge compress` does without options (prox, lazy L0 prox, KD at T=1
  from the teacher's answer on the clean image, a=0.5; called prox-lazy-rslad before);
- ``prox``: paper 1's setting (reweighted L1 prox, greedy, KD at T=4 on the adversarial
  input), with ablations ``prox-T1`` (KD at T=1) and ``prox-noKD``;
- ``admm`` (Ye et al. 2019), ``hydra`` (Sehwag et al. 2020, here with PGD-AT like the rest),
  ``magnitude`` (HYDRA's LWM), ``gmp`` (TF-MOT's polynomial schedule with PGD-AT) and
  ``gmp-plain`` (TF-MOT as shipped: per layer, no adversarial training); ``harp`` (Zhao &
  Wressnegger 2023: learned per-layer rates and scores, then the masked fine-tune);
  ``fisher``: the default with per-layer budgets from the robust saliency search
  (``--layer-budget fisher``).

Structured students (2x / 4x fewer MACs, default vs structured magnitude and HARP, through
``compress --structured --budget macs=...``): benchmarks/tradeoff_structured.py, the same
protocol and statistics.

The issue-12 targets are judged per sparsity against the best baseline (by mean worst-case
accuracy): default minus best >= +1 point at 90 / 95 %, >= +2 at 99 %, and default clean no
more than 1 point below the best baseline's clean. A gap is "resolved" only when both cells have
at least two seeds and the gap exceeds the sum of the two cells' standard deviations.

Student runs are cached by configuration: a run folder under ``benchmarks/results/tradeoff``
or ``benchmarks/results/diagnosis`` whose saved config.yaml equals the wanted one (settings a
method does not use are ignored) is reused, whatever its folder name.

    .venv/bin/python benchmarks/tradeoff.py --teacher benchmarks/results/teacher_demo \
        --epochs 40 --finetune-epochs 20 --seeds 0 1 2 [--square] [--quick]

The demo teacher is `robustedge train --model lenet5 --adversary pgd --eps 0.1 --epochs 60
--out benchmarks/results/teacher_demo` (clean 96.7 %, PGD-20x5 69.8 %).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, ensure_trained, hardware, table, write_result  # noqa: E402
from tradeoff_stats import judge, plot, summarize  # noqa: E402

# paper 1's prox (the default before issue 12's diagnosis)
PAPER1 = {"penalty": "reweighted", "lazy_prox": False, "kd_temp": 4.0, "kd_target": "adv"}
# name -> CompressConfig overrides on top of the shared setting (teacher, sparsity, seed,
# epochs, adversary pgd, eps, steps)
METHODS: Dict[str, Dict[str, Any]] = {
    "default": {"method": "prox"},
    "prox": {"method": "prox", **PAPER1},
    "prox-T1": {"method": "prox", **PAPER1, "kd_temp": 1.0},
    "prox-noKD": {"method": "prox", **PAPER1, "kd_alpha": 0.0},
    "admm": {"method": "admm"},
    "hydra": {"method": "hydra"},
    "magnitude": {"method": "magnitude"},
    "gmp": {"method": "gmp"},
    "gmp-plain": {"method": "gmp", "adversary": "none", "scope": "layer"},
    "harp": {"method": "harp"},
    # the default with per-layer budgets from the robust saliency search (issue 24)
    "fisher": {"method": "prox", "layer_budget": "fisher"},
    # the default with per-layer budgets learned by HARP's rate phase first (issue 24)
    "harp-budget": {"method": "prox", "layer_budget": "harp"},
}
DEFAULT_METHODS = [
    "default",
    "fisher",
    "harp-budget",
    "prox",
    "admm",
    "hydra",
    "harp",
    "magnitude",
    "gmp",
    "gmp-plain",
]

# config keys that did not exist when older cached runs were made: the behaviour they had then
LEGACY = {
    "kd_target": "adv",
    "lazy_prox": False,
    "ema_decay": 0.0,
    "prox_pull": 0.0,
    "admm_warm": False,
    "awp_gamma": 0.0,
    "ramp_start": 0.0,
    "ramp_end": 0.75,
    "gmp_initial_sparsity": 0.0,
    "gmp_begin_step": 0,
    "gmp_end_step": None,
    "gmp_frequency": 100,
    "gmp_power": 3.0,
}


def unused_keys(cfg: Dict[str, Any]) -> set:
    """Config keys a run with ``cfg`` (a flat config) never reads (they cannot change its
    result): the other methods' options and those its method ignores in this setting (from
    the method registry: ``CompressConfig.unused_keys``), the device, KD's settings without
    KD and TRADES' beta without TRADES."""
    from robustedge.compress import CompressConfig

    skip = {"device", *CompressConfig.from_dict(cfg).unused_keys()}
    if not cfg.get("kd_alpha"):
        skip.update(("kd_temp", "kd_target"))
    if cfg.get("adversary") != "trades":
        skip.add("trades_beta")
    return skip


def same_run(saved: Dict[str, Any], wanted: Dict[str, Any]) -> bool:
    """True when a saved (resolved) config.yaml describes the run ``wanted`` asks for."""
    if saved.get("method") != wanted["method"]:
        return False
    skip = unused_keys(wanted)
    for k, v in wanted.items():
        if k in skip:
            continue
        if k == "teacher":
            if Path(saved.get(k, "")).resolve() != Path(v).resolve():
                return False
            continue
        if v is None and k in ("data", "model"):  # resolved from the teacher
            continue
        if saved.get(k, LEGACY.get(k, "<missing>")) != v:
            return False
    return True


def build_config(args, teacher: Path, method: str, sparsity: float, seed: int):
    from robustedge.compress import CompressConfig

    shared = dict(
        teacher=str(teacher),
        sparsity=sparsity,
        adversary="pgd",
        eps=args.eps,
        steps=args.steps,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        seed=seed,
        data=args.data if args.data_dir else None,
        data_dir=args.data_dir,
    )
    return CompressConfig.from_keys(**{**shared, **METHODS[method]})


def find_cached(roots: Sequence[Path], wanted: Dict[str, Any], prefer: str = "") -> Optional[Path]:
    """A finished run folder under ``roots`` whose config is ``wanted``, if any (one that
    holds a file named ``prefer``, e.g. an evaluation cache, first)."""
    found = _matching_runs(roots, wanted)
    return next((r for r in found if (r / prefer).is_file()), found[0] if found else None)


def _matching_runs(roots: Sequence[Path], wanted: Dict[str, Any]) -> List[Path]:
    import yaml

    found: List[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for cfg_file in sorted(root.glob("*/config.yaml")):
            run = cfg_file.parent
            if not ((run / "metrics.json").is_file() and (run / "model.safetensors").is_file()):
                continue
            try:
                saved = yaml.safe_load(cfg_file.read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(saved, dict) and same_run(saved, wanted):
                found.append(run)
    return found


def make_suite(eps: float, square: bool):
    from robustedge.attacks import AttackSpec
    from robustedge.attacks.suite import AttackSuite

    specs = [
        AttackSpec("pgd", eps, steps=20, restarts=5),
        AttackSpec("apgd-ce", eps, steps=100),
        AttackSpec("apgd-dlr", eps, steps=100),
    ]
    if square:
        specs.append(AttackSpec("square", eps, steps=1000))
    return AttackSuite("white-box" + ("+square" if square else ""), tuple(specs))


def suite_of(run: Path, data, args) -> Dict[str, Any]:
    """The suite result of the model in ``run`` on the test set, cached in the folder."""
    import torch

    from robustedge.attacks.suite import worst_case_accuracy
    from robustedge.io import read_json, write_json
    from robustedge.models import load_model

    suite = make_suite(args.eps, args.square)
    cache = run / f"suite_{suite.name}_{args.eps:g}.json"
    if not cache.is_file():
        model, _ = load_model(run)
        res = worst_case_accuracy(
            model.eval(), torch.as_tensor(data.x_test), torch.as_tensor(data.y_test), suite
        )
        write_json(cache, res.to_dict())
    return read_json(cache)


def suite_row(res: Dict[str, Any]) -> Dict[str, Any]:
    acc = {r["attack"]: r["acc"] for r in res["per_attack"]}
    return {
        "clean": res["clean_acc"],
        "pgd": acc["pgd"],
        "apgd_ce": acc["apgd-ce"],
        "apgd_dlr": acc["apgd-dlr"],
        "square": acc.get("square"),
        "worst": res["worst_case_acc"],
        "suite": res["suite"],
        "n_test": res["n"],
    }


def run_cell(
    args, teacher: Path, method: str, sparsity: float, seed: int, root: Path
) -> Optional[Dict]:
    """Train (or reuse) one student and evaluate it with the suite: one row (None with
    ``--cached-only`` when no finished run of that configuration exists)."""
    from robustedge.compress import compress_run
    from robustedge.io import read_json

    cfg = build_config(args, teacher, method, sparsity, seed)
    wanted = cfg.to_dict()
    suite = make_suite(args.eps, args.square)
    run = find_cached([root, *args.cache_roots], wanted, f"suite_{suite.name}_{args.eps:g}.json")
    if run is None and getattr(args, "cached_only", False):
        return None
    if run is None:
        import shutil

        run = root / f"{method}_{sparsity:g}_e{args.epochs}+{args.finetune_epochs}_s{seed}"
        if run.exists() and not (run / "metrics.json").is_file():
            shutil.rmtree(run)  # an unfinished run of this name
        elif run.exists():  # the name is taken by another setting
            digest = hashlib.sha1(json.dumps(wanted, sort_keys=True).encode()).hexdigest()
            run = run.with_name(f"{run.name}_{digest[:8]}")
            shutil.rmtree(run, ignore_errors=True)
        compress_run(cfg, run, eval_attacks=())
    m = read_json(run / "metrics.json")
    return {
        "method": method,
        "sparsity": sparsity,
        "seed": seed,
        **suite_row(suite_of(run, _data(teacher, args), args)),
        "achieved": m["sparsity"]["global"],
        "nonzero": m["nonzero_params"],
        "layers": {k: round(v["sparsity"], 4) for k, v in m["sparsity"]["layers"].items()},
        "layer_budget": m.get("notes", {}).get("layer_budget"),  # prox's, as it ran
        "seconds": m.get("seconds"),
        "batch_size": cfg.batch_size,
        "run": str(run),
    }


_DATA: Dict[str, Any] = {}


def _data(teacher: Path, args):
    key = f"{teacher}:{args.data_dir}"
    if key not in _DATA:
        from robustedge.compress import CompressConfig
        from robustedge.compress.pipeline import load_teacher

        cfg = CompressConfig(
            teacher=str(teacher), data=args.data if args.data_dir else None, data_dir=args.data_dir
        )
        _DATA[key] = load_teacher(cfg)[3]
    return _DATA[key]


def get_teacher(args, root: Path) -> Path:
    if args.teacher:
        return Path(args.teacher)
    from robustedge.training.config import TrainConfig

    out = root / f"teacher_{args.data}_e{args.teacher_epochs}"
    cfg = TrainConfig(
        data=args.data,
        data_dir=args.data_dir,
        model="lenet5",
        adversary="pgd",
        eps=args.eps,
        steps=args.steps,
        epochs=args.teacher_epochs,
        seed=0,
    )
    return ensure_trained(out, cfg)


def _fmt(c: Dict, k: str) -> str:
    return "-" if c.get(k) is None else f"{100 * c[k]:.1f}±{100 * c[k + '_std']:.1f}"


def run(args, name: str) -> Path:
    """Run ``args.methods`` x ``args.sparsities`` x ``args.seeds``; print and write the result."""
    t0 = time.perf_counter()
    root = RESULTS / "tradeoff" / args.data
    root.mkdir(parents=True, exist_ok=True)
    teacher = get_teacher(args, root)
    root = root / teacher.resolve().name  # student runs are cached per teacher
    root.mkdir(parents=True, exist_ok=True)
    args.cache_roots = [RESULTS / "diagnosis" / teacher.resolve().name]  # its older runs
    from robustedge.io import read_json

    tm = read_json(teacher / "metrics.json")
    teacher_row = {"run": str(teacher), "params": tm.get("params")}
    teacher_row.update(suite_row(suite_of(teacher, _data(teacher, args), args)))
    rows: List[Dict] = []
    not_run: List[Dict] = []
    for sparsity in args.sparsities:
        for method in args.methods:
            for seed in args.seeds:
                r = run_cell(args, teacher, method, sparsity, seed, root)
                if r is None:
                    print(f"  {method} @ {sparsity:g} s{seed}: not run (--cached-only)")
                    not_run.append({"method": method, "sparsity": sparsity, "seed": seed})
                    continue
                rows.append(r)
                print(
                    f"  {method} @ {sparsity:g} s{seed}: clean {100 * r['clean']:.1f} "
                    f"PGD {100 * r['pgd']:.1f} APGD-CE {100 * r['apgd_ce']:.1f} "
                    f"APGD-DLR {100 * r['apgd_dlr']:.1f} worst {100 * r['worst']:.1f} "
                    f"layers {r['layers']}",
                    flush=True,
                )
    cells = summarize(rows, args.methods, args.sparsities)
    verdict = judge(cells, args.sparsities, candidate=args.candidate)
    suite = make_suite(args.eps, args.square)
    hw = hardware()
    print(
        f"data {args.data}, teacher {teacher}: clean {100 * teacher_row['clean']:.1f}%, "
        f"worst {100 * teacher_row['worst']:.1f}%; eps {args.eps}; PGD-{args.steps} training; "
        f"{args.epochs}+{args.finetune_epochs} epochs; mean±std over seeds {args.seeds}; "
        f"suite {suite.name} ({', '.join(s.label() for s in suite.specs)}); "
        f"host {hw['cpu']} ({hw['cores']} cores)"
    )
    keys = ["clean", "pgd", "apgd_ce", "apgd_dlr"] + (["square"] if args.square else [])
    headers = ["sparsity", "method", "n", "clean", "PGD-20x5", "APGD-CE", "APGD-DLR"]
    headers += (["Square-1000"] if args.square else []) + ["worst"]
    print(
        table(
            headers,
            [
                [f"{c['sparsity']:g}", c["method"], c["n"]] + [_fmt(c, k) for k in keys + ["worst"]]
                for c in cells
            ],
        )
    )
    for sp, v in verdict.items():
        print(
            f"  {sp}: {args.candidate} - best baseline ({v['best_baseline']}) = "
            f"{v['gap_points']:+.1f} "
            f"worst-case points (spread {v['spread_points']:.1f}, target "
            f">= +{v['target_points']}: {'met' if v['robust_target_met'] else 'missed'}); "
            f"clean {v['clean_gap_points']:+.1f} vs best baseline clean "
            f"({'met' if v['clean_target_met'] else 'missed'}), "
            f"{v['clean_gap_vs_at_points'] or float('nan'):+.1f} vs the best adversarially "
            "trained one"
        )
    settings = {k: v for k, v in vars(args).items() if k not in ("plot_only", "cache_roots")}
    png = RESULTS / f"{name}.png"
    payload = {
        "benchmark": "tradeoff",
        "hardware": hw,
        "settings": settings,
        "methods": {m: METHODS[m] for m in args.methods},
        "suite": suite.to_dict(),
        "teacher": teacher_row,
        "cells": cells,
        "targets": verdict,
        "rows": rows,
        "not_run": not_run,
        "plot": str(png),
        "seconds": time.perf_counter() - t0,
        "loadavg_at_end": list(os.getloadavg()),  # the 2-core VM is shared with other jobs
        "note": "seconds per row: training time of the run when it was made (cached runs keep "
        "theirs); suite evaluations are not included",
    }
    plot(payload, png)
    path = write_result(name, payload)
    print(f"wrote {path} and {png}")
    return path


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--teacher", default=None, help="Teacher run folder (else trained here).")
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.99])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=40, help="Pruning-phase epochs.")
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=5, help="PGD steps in training.")
    ap.add_argument("--square", action="store_true", help="Add Square-1000 to the suite.")
    ap.add_argument("--quick", action="store_true", help="Smoke run: 0.95, 1+1 epochs, 1 seed.")
    ap.add_argument(
        "--cached-only",
        action="store_true",
        help="Train nothing: report the cells whose runs exist, list the others as not run.",
    )
    return ap


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    ap.add_argument(
        "--candidate",
        default=None,
        choices=list(METHODS),
        help="The method the verdict compares with the best baseline [default: default; no "
        "verdict when it is not run].",
    )
    ap.add_argument("--name", default=None, help="Result name [default: tradeoff_DATA].")
    ap.add_argument(
        "--plot-only", default=None, metavar="JSON", help="Only redraw the PNG from a result JSON."
    )
    args = ap.parse_args()
    if args.plot_only:
        payload = json.loads(Path(args.plot_only).read_text())
        png = Path(args.plot_only).with_suffix(".png")
        plot(payload, png)
        print(f"wrote {png}")
        return
    if args.candidate is None:
        args.candidate = "default"  # judged only when run (a grid of other methods: no verdict)
    elif args.candidate not in args.methods:
        ap.error(f"--candidate {args.candidate} is not among --methods")
    if args.quick:
        args.sparsities, args.epochs, args.finetune_epochs = [0.95], 1, 1
        args.teacher_epochs, args.seeds = min(args.teacher_epochs, 5), [0]
    run(args, args.name or f"tradeoff_{args.data}")


if __name__ == "__main__":
    main()
