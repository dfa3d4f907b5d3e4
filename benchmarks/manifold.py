"""On-manifold vs off-manifold adversarial training under compression (paper 2's claim).

For each data set (digits: CVAE manifold; synthetic: the exact generator), each training
adversary (natural / FGSM-AT / PGD-AT / TRADES / on-manifold / mixed) and each sparsity
(0 = the dense model trained with `train_run`; 0.9 / 0.95 / 0.99 = `compress_run` with the prox
method, the same adversary and KD from that dense model): clean accuracy, on-manifold robust
accuracy (eta in latent units), PGD robust accuracy (Linf, pixel eps) and the mean accuracy over
6 natural corruptions x 5 severities. The claim tested: on-manifold AT keeps on-manifold
robustness better than off-manifold AT (FGSM/PGD/TRADES) as compression grows.

Each cell runs ``--seeds`` times (the dense model's and the student's seed) and is reported as
mean and sample std; a verdict needs the margin to exceed the sum of the two cells' stds.
The compression budget is the trade-off benchmark's (``--epochs 40 --finetune-epochs 20``).
Runs and evaluations are cached under benchmarks/results/manifold/ (rerunning resumes).

Usage: python benchmarks/manifold.py [--quick] [--data digits synthetic] [--seeds 0 1 2]
    [--adversaries none fgsm pgd trades onmanifold mixed] [--epochs 40 --finetune-epochs 20]
Writes benchmarks/results/<name>.json and <name>.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, hardware, table, write_result  # noqa: E402

ADVERSARIES = ["none", "fgsm", "pgd", "trades", "onmanifold", "mixed"]
LABELS = {
    "none": "natural",
    "fgsm": "FGSM-AT",
    "pgd": "PGD-AT",
    "trades": "TRADES",
    "onmanifold": "on-manifold",
    "mixed": "mixed",
}
OFF_MANIFOLD = ["fgsm", "pgd", "trades"]
SPARSITIES = [0.0, 0.9, 0.95, 0.99]
# Latent Linf budget for attack and training. Synthetic: Stutz et al.'s 0.3 (class-specific),
# here a fraction of each factor's half-range. Digits: 0.3 barely moves a natural model on the
# 8-d CVAE's reconstructions (97.8 -> 94.0 %), so 1.0 (see attacks/on_manifold.py).
ETA = {"digits": 1.0, "synthetic": 0.3}


def settings(quick: bool, data: str, epochs: int = 40, finetune: int = 20) -> Dict[str, Any]:
    """Training/eval budget per data set (synthetic: 3000 16x16 images, so fewer dense
    epochs); the compression budget (``epochs`` + ``finetune``) is the same for both."""
    if quick:
        return {
            "dense_epochs": 2,
            "epochs": 1,
            "finetune": 1,
            "steps": 3,
            "att_steps": 5,
            "batch_size": 128,
            "vae_epochs": 10,
            "n_test": 200,
            "sparsities": [0.0, 0.9],
        }
    if data == "synthetic":
        return {
            "dense_epochs": 12,
            "epochs": epochs,
            "finetune": finetune,
            "steps": 3,
            "att_steps": 20,
            "batch_size": 128,
            "vae_epochs": 100,
            "n_test": 400,
            "sparsities": SPARSITIES,
        }
    return {
        "dense_epochs": 10,
        "epochs": epochs,
        "finetune": finetune,
        "steps": 5,
        "att_steps": 20,
        "batch_size": 64,
        "vae_epochs": 100,
        "n_test": 450,
        "sparsities": SPARSITIES,
    }


def manifold_source(data: str, s: Dict[str, Any], work: Path) -> str:
    """A trained CVAE run folder for image data; the exact generator for synthetic."""
    if data == "synthetic":
        return "synthetic"
    from robustedge.manifold.train import VAEConfig, train_vae

    out = work / f"vae_{data}_e{s['vae_epochs']}"
    if not (out / "metrics.json").is_file():
        m = train_vae(VAEConfig(data=data, epochs=s["vae_epochs"], device="cpu"), out)
        print(f"{data}: CVAE test MSE/pixel {m['test']['mse_per_pixel']:.4f}")
    return str(out)


def adversary_opts(adv: str, manifold: str, eta: float) -> Dict[str, Any]:
    return (
        {"manifold": manifold, "ratio": 0.5, "eta": eta} if adv in ("onmanifold", "mixed") else {}
    )


def evaluate_model(model, data, manifold: str, s: Dict[str, Any], eps: float) -> Dict[str, float]:
    from robustedge.attacks import AttackSpec
    from robustedge.attacks.corruptions import corruption_accuracy
    from robustedge.manifold import load_manifold
    from robustedge.training.evaluate import accuracy, robust_accuracy

    n = s["n_test"]
    x, y = torch.as_tensor(data.x_test[:n]), torch.as_tensor(data.y_test[:n])
    onm = AttackSpec("onmanifold", s["eta"], steps=s["att_steps"], params={"manifold": manifold})
    pgd = AttackSpec("pgd", eps, steps=s["att_steps"])
    res = {"manifold": load_manifold(manifold)}
    return {
        "clean": accuracy(model, x, y),
        "onmanifold": robust_accuracy(model, x, y, onm, resources=res),
        "pgd": robust_accuracy(model, x, y, pgd),
        "corruption_mean": corruption_accuracy(model, x.numpy(), y.numpy(), seed=0)["mean"],
    }


def _manifold(source, data_name):
    from robustedge.manifold import load_manifold

    return None if source is None else load_manifold(source)


def run_cell(data_name, data, adv, sparsity, seed, manifold, s, work, eps) -> Dict:
    """One model (dense: `train_run`; sparse: prox `compress_run` from the dense model of the
    same adversary and seed), trained unless cached in ``work``, and its evaluation."""
    from robustedge.compress import CompressConfig, compress_run
    from robustedge.io import read_json, write_json
    from robustedge.models import load_model
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    t0 = time.perf_counter()
    opts = adversary_opts(adv, manifold, s["eta"])
    dense_run = work / f"{data_name}_{adv}_dense_e{s['dense_epochs']}_s{seed}"
    if sparsity == 0.0:
        out = dense_run
        cfg = TrainConfig(
            data=data_name,
            model="lenet5",
            adversary=adv,
            eps=eps,
            steps=s["steps"],
            epochs=s["dense_epochs"],
            seed=seed,
            device="cpu",
            batch_size=s["batch_size"],
            manifold=opts.get("manifold"),
            eta=opts.get("eta"),
        )
        if not _finished(out):
            train_run(cfg, out, manifold=_manifold(cfg.manifold, data_name))
    else:
        out = work / (
            f"{data_name}_{adv}_{sparsity}_e{s['dense_epochs']}_{s['epochs']}+{s['finetune']}"
            f"_s{seed}"
        )
        cfg = CompressConfig(
            teacher=str(dense_run),
            method="prox",
            sparsity=sparsity,
            adversary=adv,
            adversary_opts=opts,
            eps=eps,
            steps=s["steps"],
            epochs=s["epochs"],
            finetune_epochs=s["finetune"],
            seed=seed,
            batch_size=s["batch_size"],
            device="cpu",
        )
        if not _finished(out):
            compress_run(cfg, out, eval_attacks=())
    trained = read_json(out / "metrics.json").get("seconds")
    cache = out / f"manifold_eval_n{s['n_test']}_a{s['att_steps']}_eta{s['eta']:g}_eps{eps:g}.json"
    if not cache.is_file():
        model, _ = load_model(out)
        write_json(cache, evaluate_model(model.eval(), data, manifold, s, eps))
    row = {"data": data_name, "adversary": adv, "sparsity": sparsity, "seed": seed}
    row.update(read_json(cache))
    row["seconds"] = time.perf_counter() - t0
    row["train_seconds"] = trained
    return row


def _finished(run: Path) -> bool:
    return (run / "metrics.json").is_file() and (run / "model.safetensors").is_file()


METRICS = ("clean", "onmanifold", "pgd", "corruption_mean")


def summarize(rows: List[Dict]) -> List[Dict]:
    """Mean and sample std over seeds per (data, adversary, sparsity) cell."""
    cells: Dict[tuple, List[Dict]] = {}
    for r in rows:
        cells.setdefault((r["data"], r["adversary"], r["sparsity"]), []).append(r)
    out = []
    for (d, adv, sp), at in cells.items():
        cell = {"data": d, "adversary": adv, "sparsity": sp, "n": len(at)}
        cell["seeds"] = [r["seed"] for r in at]
        for k in METRICS:
            xs = [r[k] for r in at]
            cell[k] = statistics.mean(xs)
            cell[f"{k}_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        out.append(cell)
    return out


def claim(cells: List[Dict], data_name: str) -> Dict[str, Any]:
    """On-manifold robust acc of on-manifold AT vs the best off-manifold AT, per sparsity
    (means over seeds). The margin is ``resolved`` only if it exceeds the sum of the two
    cells' stds. A sparsity where every model's mean clean accuracy is below 0.2 (near chance)
    is marked ``collapsed`` and left out of the verdicts."""
    out: Dict[str, Any] = {}
    margins = []
    for sp in sorted({c["sparsity"] for c in cells if c["data"] == data_name}):
        get = {c["adversary"]: c for c in cells if c["data"] == data_name and c["sparsity"] == sp}
        offs = [get[a] for a in OFF_MANIFOLD if a in get]
        if "onmanifold" not in get or not offs:
            continue
        best = max(offs, key=lambda c: c["onmanifold"])
        onm = get["onmanifold"]
        margin = onm["onmanifold"] - best["onmanifold"]
        spread = onm["onmanifold_std"] + best["onmanifold_std"]
        collapsed = max(c["clean"] for c in get.values()) < 0.2
        out[str(sp)] = {
            "onmanifold_at": onm["onmanifold"],
            "onmanifold_at_std": onm["onmanifold_std"],
            "best_off_at": best["onmanifold"],
            "best_off_at_std": best["onmanifold_std"],
            "best_off_method": best["adversary"],
            "margin": margin,
            "spread": spread,
            "resolved": min(onm["n"], best["n"]) > 1 and abs(margin) > spread,
            "collapsed": collapsed,
            "n_seeds": min(onm["n"], best["n"]),
        }
        if not collapsed:
            margins.append((margin, spread, out[str(sp)]["resolved"]))
    out["holds_at_every_sparsity"] = bool(margins) and all(m > 0 and r for m, _, r in margins)
    out["margin_grows_with_sparsity"] = (
        len(margins) > 1
        and margins[-1][2]
        and margins[-1][0] - margins[0][0] > margins[-1][1] + margins[0][1]
    )
    return out


def plot(rows: List[Dict], datasets: List[str], path: Path) -> None:
    """Mean (std as error bars) of each metric vs sparsity per training adversary; ``rows``
    are the summary cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("onmanifold", "on-manifold robust acc"),
        ("pgd", "PGD robust acc"),
        ("corruption_mean", "mean corruption acc"),
        ("clean", "clean acc"),
    ]
    fig, axes = plt.subplots(
        len(datasets), len(metrics), figsize=(4 * len(metrics), 3.2 * len(datasets)), squeeze=False
    )
    for i, d in enumerate(datasets):
        for j, (key, title) in enumerate(metrics):
            ax = axes[i, j]
            for adv in ADVERSARIES:
                pts = sorted(
                    (c["sparsity"], c[key], c[f"{key}_std"])
                    for c in rows
                    if c["data"] == d and c["adversary"] == adv
                )
                if pts:
                    xs = [str(p[0]) for p in pts]
                    ax.errorbar(
                        xs,
                        [p[1] for p in pts],
                        yerr=[p[2] for p in pts],
                        marker="o",
                        capsize=3,
                        label=LABELS[adv],
                    )
            ax.set_title(f"{d}: {title}", fontsize=9)
            ax.set_xlabel("sparsity")
            ax.set_ylim(0, 1)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="Smoke run (minutes -> seconds).")
    ap.add_argument("--data", nargs="+", default=["digits", "synthetic"])
    ap.add_argument("--adversaries", nargs="+", default=ADVERSARIES, choices=ADVERSARIES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=40, help="Pruning-phase epochs.")
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--sparsities", type=float, nargs="+", default=None)
    ap.add_argument("--eps", type=float, default=0.1, help="PGD/FGSM/TRADES pixel budget.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="manifold", help="Result name under benchmarks/results.")
    ap.add_argument("--eta", type=float, default=None, help=f"Latent budget (default {ETA}).")
    args = ap.parse_args()
    if "onmanifold" not in args.adversaries:
        raise SystemExit("--adversaries must include onmanifold (the claim is about it)")
    torch.set_num_threads(args.threads)
    budget = {d: settings(args.quick, d, args.epochs, args.finetune_epochs) for d in args.data}
    if args.quick:
        args.seeds = args.seeds[:1]
    for d in args.data:
        if args.sparsities is not None:
            budget[d]["sparsities"] = [0.0] + [x for x in args.sparsities if x > 0]
    rows: List[Dict] = []
    t_start = time.perf_counter()
    work = RESULTS / "manifold" / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    for d in args.data:
        from robustedge.data import load_dataset

        data = load_dataset(d)
        s = {**budget[d], "eta": args.eta or ETA.get(d, 0.3)}
        manifold = manifold_source(d, s, work)
        for seed in args.seeds:
            for adv in args.adversaries:
                for sp in s["sparsities"]:
                    row = run_cell(d, data, adv, sp, seed, manifold, s, work, args.eps)
                    rows.append(row)
                    print(
                        f"{d:9s} {LABELS[adv]:11s} sparsity {sp:<4} s{seed}: clean "
                        f"{row['clean']:.3f} on-man {row['onmanifold']:.3f} pgd {row['pgd']:.3f}"
                        f" corr {row['corruption_mean']:.3f} ({row['seconds']:.0f}s)",
                        flush=True,
                    )
    hw = hardware()
    total = time.perf_counter() - t_start
    cells = summarize(rows)
    print(
        f"\non-manifold benchmark, {hw['machine']} {hw['cpu']} ({hw['cores']} cores), "
        f"{total:.0f}s total{' (quick)' if args.quick else ''}; mean±std over seeds {args.seeds}"
    )

    def ms(c, k):
        return f"{100 * c[k]:.1f}±{100 * c[k + '_std']:.1f}"

    print(
        table(
            ["data", "training", "sparsity", "n", "clean", "on-manifold", "PGD", "corruptions"],
            [
                [c["data"], LABELS[c["adversary"]], c["sparsity"], c["n"]]
                + [ms(c, k) for k in METRICS]
                for c in cells
            ],
        )
    )
    claims = {d: claim(cells, d) for d in args.data}
    print(json.dumps(claims, indent=1))
    plot(cells, args.data, RESULTS / f"{args.name}.png")
    payload = {
        "hardware": hw,
        "quick": args.quick,
        "settings": budget,
        "seeds": args.seeds,
        "adversaries": args.adversaries,
        "eta": {d: args.eta or ETA.get(d, 0.3) for d in args.data},
        "eps": args.eps,
        "attacks": {
            "onmanifold": "latent Linf eta, att_steps steps",
            "pgd": "Linf eps, att_steps steps, 1 restart",
        },
        "model": "lenet5",
        "compression": "prox (robustedge.compress defaults), KD from the dense model",
        "seconds": total,
        "cells": cells,
        "rows": rows,
        "claim": claims,
        "plot": f"{args.name}.png",
    }
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
