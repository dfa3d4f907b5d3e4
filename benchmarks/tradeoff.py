"""Trade-off benchmark: clean / PGD / Square accuracy vs sparsity for every pruning method.

Same teacher (a LeNet-5 trained with PGD inside the benchmark, or ``--teacher RUN``), same
training adversary (PGD), same epoch budget (pruning phase + fine-tune; magnitude, which has
no pruning phase, fine-tunes for the whole budget), same evaluation for every method:
PGD-20 with 5 restarts and Square (``--square-queries``), Linf eps = ``--eps``.
Methods: prox (+KD+AT, paper 1, default schedule and KD settings), prox-T1 (ablation: KD at
temperature 1), prox-noKD (ablation: the same without distillation), prox-lazy-rslad (lazy
L0 prox + KD at T=1 from the teacher's answer on the clean image; docs/compression-diagnosis.md),
admm (Ye et al. 2019), hydra (Sehwag et al. 2020), magnitude (HYDRA's LWM), gmp (TF-MOT's
polynomial schedule with PGD-AT) and gmp-plain (TF-MOT as shipped: per-layer, no AT).
Baselines train with cross-entropy as in their papers. Tests the claim "prox+KD+AT gives the
best robust accuracy at high compression".

    .venv/bin/python benchmarks/tradeoff.py [--quick] [--data digits --data-dir DIR]

Measured (benchmarks/measured/tradeoff.json): the demo teacher (`robustedge train --model
lenet5 --adversary pgd --eps 0.1 --epochs 60`) passed as ``--teacher``, ``--epochs 40
--finetune-epochs 20`` (about 4 min with OMP_NUM_THREADS=1 on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, ensure_trained, hardware, table, write_result  # noqa: E402

METHODS = [
    "prox",
    "prox-T1",
    "prox-noKD",
    "prox-lazy-rslad",
    "admm",
    "hydra",
    "magnitude",
    "gmp",
    "gmp-plain",
]
# per-method settings beyond the shared ones (docs/compression-diagnosis.md). The prox rows
# keep paper 1's setting; "prox-lazy-rslad" is robustedge's default since the diagnosis.
PAPER1 = {"lazy_prox": False, "kd_target": "adv"}
METHOD_SETTINGS = {
    "prox": PAPER1,
    "prox-T1": PAPER1,
    "prox-noKD": PAPER1,
    "prox-lazy-rslad": {
        "lazy_prox": True,
        "penalty": "l0",
        "kd_target": "clean",
        "kd_temp": 1.0,
    },
    "gmp-plain": {"adversary": "none", "scope": "layer"},  # TF-MOT as shipped: no AT
}


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
        seed=args.seed,
    )
    return ensure_trained(out, cfg)


def compress_one(args, teacher: Path, method: str, sparsity: float, root: Path) -> dict:
    from robustedge.attacks import AttackSpec
    from robustedge.compress import CompressConfig, compress_run
    from robustedge.io import read_json

    kd = ""
    if method.startswith("prox"):
        if method == "prox" and (args.kd_alpha, args.kd_temp) != (0.5, 4.0):
            kd += f"_a{args.kd_alpha:g}_t{args.kd_temp:g}"
        if args.penalty != "reweighted":
            kd += f"_{args.penalty}"
        if args.lam_schedule != "ball":
            kd += f"_{args.lam_schedule}"
    out = root / f"{method}{kd}_{sparsity:g}_e{args.epochs}+{args.finetune_epochs}_s{args.seed}"
    if (out / "metrics.json").is_file():
        return read_json(out / "metrics.json")
    base = method.split("-")[0]
    settings = dict(
        teacher=str(teacher),
        method=base,
        sparsity=sparsity,
        adversary="pgd",
        eps=args.eps,
        steps=args.steps,
        kd_alpha=args.kd_alpha if method in ("prox", "prox-T1", "prox-lazy-rslad") else 0.0,
        kd_temp=1.0 if method == "prox-T1" else args.kd_temp,
        penalty=args.penalty,
        lam_schedule=args.lam_schedule,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        seed=args.seed,
        data=args.data if args.data_dir else None,
        data_dir=args.data_dir,
    )
    cfg = CompressConfig(**{**settings, **METHOD_SETTINGS.get(method, {})})
    square = AttackSpec("square", args.eps, steps=args.square_queries)
    return compress_run(cfg, out, eval_attacks=("pgd", square))


def square_of(run: Path, args) -> float:
    """Square robust accuracy of a (teacher) run, cached beside it."""
    from robustedge.attacks import AttackSpec
    from robustedge.io import read_json, write_json
    from robustedge.runs import load_run
    from robustedge.training.evaluate import evaluate

    cache = run / f"square_{args.eps:g}_{args.square_queries}.json"
    if not cache.is_file():
        model, _, _, data, _ = load_run(run)
        spec = AttackSpec("square", args.eps, steps=args.square_queries)
        write_json(cache, evaluate(model, data.x_test, data.y_test, [spec], seed=args.seed))
    return read_json(cache)["robust"][0]["acc"]


def _acc(metrics: dict, attack: str) -> float:
    for r in metrics["robust"]:
        if r["attack"] == attack:
            return r["acc"]
    return float("nan")


def plot(payload: dict, path: Path) -> None:
    """PGD and Square robust accuracy vs sparsity per method, from the result JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, teacher = payload["rows"], payload["teacher"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key in zip(axes, ("pgd", "square")):
        for method in METHODS:
            pts = sorted((r["sparsity"], r[key]) for r in rows if r["method"] == method)
            if pts:
                ax.plot([100 * s for s, _ in pts], [100 * a for _, a in pts], "o-", label=method)
        if teacher.get(key) is not None:
            ax.axhline(100 * teacher[key], color="grey", ls="--", label="dense teacher")
        ax.set_xlabel("sparsity of prunable weights (%)")
        ax.set_title(f"{key.upper()} robust accuracy, eps={payload['settings']['eps']}")
    axes[0].set_ylabel("robust accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{payload['settings']['data']}: LeNet-5 teacher, "
        f"{payload['settings']['epochs']}+{payload['settings']['finetune_epochs']} "
        "epochs per method",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--teacher", default=None, help="Teacher run folder (else trained here).")
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.99])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--epochs", type=int, default=4, help="Pruning-phase epochs.")
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=5, help="PGD steps in training.")
    ap.add_argument("--kd-alpha", type=float, default=0.5)
    ap.add_argument("--kd-temp", type=float, default=4.0)
    ap.add_argument("--penalty", default="reweighted", choices=["reweighted", "l1", "l0"])
    ap.add_argument("--lam-schedule", default="ball", choices=["ball", "track", "feedback"])
    ap.add_argument("--name", default=None, help="Result name [default: tradeoff_DATA].")
    ap.add_argument("--square-queries", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="Smoke run: 0.95 only, 1+1 epochs.")
    ap.add_argument(
        "--plot-only", default=None, metavar="JSON", help="Only redraw the PNG from a result JSON."
    )
    args = ap.parse_args()
    if args.plot_only:
        import json

        payload = json.loads(Path(args.plot_only).read_text())
        png = Path(args.plot_only).with_suffix(".png")
        plot(payload, png)
        print(f"wrote {png}")
        return
    if args.quick:
        args.sparsities, args.epochs, args.finetune_epochs = [0.95], 1, 1
        args.teacher_epochs, args.square_queries = min(args.teacher_epochs, 5), 100
    root = RESULTS / "tradeoff" / args.data
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    teacher = get_teacher(args, root)
    if args.teacher:  # student runs are cached per teacher
        root = root / teacher.resolve().name
    from robustedge.io import read_json

    tm = read_json(teacher / "metrics.json")
    teacher_square = square_of(teacher, args)
    rows = []
    for sparsity in args.sparsities:
        for method in args.methods:
            t1 = time.perf_counter()
            m = compress_one(args, teacher, method, sparsity, root)
            rows.append(
                {
                    "method": method,
                    "sparsity": sparsity,
                    "clean": m["clean_acc"],
                    "pgd": _acc(m, "pgd"),
                    "square": _acc(m, "square"),
                    "achieved": m["sparsity"]["global"],
                    "nonzero": m["nonzero_params"],
                    "seconds": m.get("seconds", time.perf_counter() - t1),
                }
            )
            print(f"  {method} @ {sparsity:g}: PGD {100 * rows[-1]['pgd']:.1f}%", flush=True)
    headers = ["sparsity", "method", "clean %", "PGD %", "Square %", "achieved", "non-zero"]
    trows = [
        [
            f"{r['sparsity']:g}",
            r["method"],
            100 * r["clean"],
            100 * r["pgd"],
            100 * r["square"],
            f"{r['achieved']:.4f}",
            r["nonzero"],
        ]
        for r in rows
    ]
    hw = hardware()
    settings = {k: v for k, v in vars(args).items() if k != "plot_only"}
    print(
        f"data {args.data}, teacher lenet5 PGD-AT: clean {100 * tm['clean_acc']:.1f}%, "
        f"PGD {100 * _acc(tm, 'pgd'):.1f}%, Square {100 * teacher_square:.1f}%; eps {args.eps}; "
        f"PGD-{args.steps} training, "
        f"{args.epochs}+{args.finetune_epochs} epochs; eval PGD-20x5 restarts, Square "
        f"{args.square_queries} queries; host {hw['cpu']} ({hw['cores']} cores)"
    )
    print(table(headers, trows))
    best = {}
    for s in args.sparsities:
        at = [r for r in rows if r["sparsity"] == s]
        best[f"{s:g}"] = max(at, key=lambda r: r["pgd"])["method"] if at else None
    print("best PGD robust accuracy per sparsity:", best)
    name = args.name or f"tradeoff_{args.data}"
    png = RESULTS / f"{name}.png"
    payload = {
        "benchmark": "tradeoff",
        "hardware": hw,
        "settings": settings,
        "teacher": {
            "run": str(teacher),
            "clean": tm["clean_acc"],
            "pgd": _acc(tm, "pgd"),
            "square": teacher_square,
            "params": tm.get("params"),
        },
        "rows": rows,
        "best_pgd": best,
        "plot": str(png),
        "seconds": time.perf_counter() - t0,
    }
    plot(payload, png)
    print(f"wrote {write_result(name, payload)} and {png}")


if __name__ == "__main__":
    main()
