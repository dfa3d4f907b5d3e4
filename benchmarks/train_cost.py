"""Time per epoch of natural vs PGD-K adversarial training on the same model and data.

PGD-K costs K extra forward+backward passes per batch, so the ratio should be close to K+1.
Usage: python benchmarks/train_cost.py [--model lenet5] [--steps 10] [--epochs 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import hardware, table, write_result  # noqa: E402
from robustedge.data import load_dataset  # noqa: E402
from robustedge.models import ModelSpec, build_model  # noqa: E402
from robustedge.training import build_adversary, epoch_batches, fit  # noqa: E402


def time_epochs(model_name: str, adversary: str, steps: int, epochs: int, data) -> float:
    torch.manual_seed(0)
    model = build_model(ModelSpec(model_name, data.input_shape, data.num_classes))
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    adv = build_adversary(adversary, eps=0.1, steps=steps)
    fit(model, epoch_batches(x, y, 64, 0), adv, opt, 1)  # warm-up epoch, not timed
    t0 = time.perf_counter()
    fit(model, epoch_batches(x, y, 64, 1), adv, opt, epochs)
    return (time.perf_counter() - t0) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    data = load_dataset(args.data)
    nat = time_epochs(args.model, "none", 0, args.epochs, data)
    pgd = time_epochs(args.model, "pgd", args.steps, args.epochs, data)
    ratio = pgd / nat
    rows = [["natural", nat, 1.0], [f"pgd-{args.steps}", pgd, ratio]]
    print(
        f"train cost on {args.data}/{args.model}, {hardware()['cpu']} ({hardware()['cores']} cores)"
    )
    print(table(["training", "s/epoch", "ratio"], rows))
    print(f"ratio {ratio:.2f}x vs physical (K+1) = {args.steps + 1}x")
    path = write_result(
        "train_cost",
        {
            "hardware": hardware(),
            "model": args.model,
            "data": args.data,
            "steps": args.steps,
            "epochs_timed": args.epochs,
            "natural_s_per_epoch": nat,
            "pgd_s_per_epoch": pgd,
            "ratio": ratio,
            "expected_ratio": args.steps + 1,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
