"""Diagnosis: the default (lazy L0 prox + KD + PGD-AT) with per-layer budgets forced.

Is ADMM's edge on the 16x16 synthetic set its per-layer allocation? This trains the default
with the global top-k replaced by a fixed sparsity per layer (e.g. the one an ADMM run ended
with; on the ramp each layer's share scales with the ramp's sparsity) and evaluates it with the
trade-off benchmark's white-box suite. docs/compression-diagnosis.md section 7 reports it.

    .venv/bin/python benchmarks/forced_budgets.py --data synthetic \
        --teacher benchmarks/results/tradeoff/synthetic/teacher_synthetic_e60 --sparsity 0.95 \
        --budgets '{"3.weight": 0.8383, "7.weight": 0.9601, "9.weight": 0.9457}'
Writes benchmarks/results/forced_budgets.json (one row per run, kept across calls).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tradeoff  # noqa: E402
from _common import RESULTS, hardware, write_result  # noqa: E402


def force(budgets, target: float) -> None:
    """Make prox's projections keep ``budgets`` (scaled to the ramp) instead of global top-k."""
    import robustedge.compress.method_prox as mp
    from robustedge.compress.prox import keep_count, topk_mask

    orig = mp.topk_masks

    def per_layer(scores, sparsity, scope="global"):
        if scope != "global" or sparsity <= 0:
            return orig(scores, sparsity, scope)
        share = sparsity / target
        return {
            n: topk_mask(s, keep_count(s.numel(), min(budgets[n] * share, 1.0)))
            for n, s in scores.items()
        }

    mp.topk_masks = per_layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--sparsity", type=float, required=True)
    ap.add_argument("--budgets", required=True, help="JSON: layer name -> sparsity at target")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=5, help="PGD steps in training")
    a = ap.parse_args()
    budgets = json.loads(a.budgets)
    force(budgets, a.sparsity)
    args = argparse.Namespace(
        eps=a.eps,
        steps=a.steps,
        epochs=a.epochs,
        finetune_epochs=a.finetune_epochs,
        data=a.data,
        data_dir=None,
        square=False,
        cache_roots=[],
    )
    from robustedge.compress import compress_run
    from robustedge.io import read_json

    teacher = Path(a.teacher)
    cfg = tradeoff.build_config(args, teacher, "default", a.sparsity, a.seed)
    run = RESULTS / "tradeoff" / "forced_budgets" / f"default_{a.data}_{a.sparsity:g}_s{a.seed}"
    if not (run / "metrics.json").is_file():
        compress_run(cfg, run, eval_attacks=())
    m = read_json(run / "metrics.json")
    row = {"data": a.data, "sparsity": a.sparsity, "seed": a.seed, "budgets": budgets}
    row.update(teacher=teacher.name, eps=a.eps, epochs=[a.epochs, a.finetune_epochs])
    row.update(tradeoff.suite_row(tradeoff.suite_of(run, tradeoff._data(teacher, args), args)))
    row["layers"] = {k: round(v["sparsity"], 4) for k, v in m["sparsity"]["layers"].items()}
    path = RESULTS / "forced_budgets.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    rows = [
        r for r in rows if (r["data"], r["sparsity"], r["seed"]) != (a.data, a.sparsity, a.seed)
    ]
    write_result("forced_budgets", {"hardware": hardware(), "rows": rows + [row]})
    print({k: row[k] for k in ("sparsity", "clean", "pgd", "worst", "layers")})


if __name__ == "__main__":
    main()
