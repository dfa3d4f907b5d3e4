"""Clean and robust accuracy; every robust number carries its attack settings."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn as nn

from robustedge.attacks import AttackSpec, build_attack

# Defaults used by `robustedge eval` and after training. PGD: 20 steps, 5 random restarts.
DEFAULT_STEPS = {"fgsm": 0, "pgd": 20, "square": 1000}
DEFAULT_RESTARTS = {"fgsm": 1, "pgd": 5, "square": 1}


def default_spec(name: str, eps: float) -> AttackSpec:
    return AttackSpec(
        name, eps, steps=DEFAULT_STEPS.get(name, 0), restarts=DEFAULT_RESTARTS.get(name, 1)
    )


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [
        model(x[i : i + batch_size].to(device)).argmax(1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y).float().mean())


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    batch_size: int = 256,
    seed: int = 0,
) -> float:
    """Fraction of samples classified correctly after the attack (crafted per batch)."""
    gen = torch.Generator().manual_seed(seed)
    attack = build_attack(model, spec, generator=gen)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = attack.perturb(xb, yb)
        correct += int((predict(model, x_adv) == yb).sum())
    return correct / len(x)


def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, specs: Sequence[AttackSpec], seed: int = 0
) -> Dict[str, object]:
    """``{clean_acc, n, robust: [{attack, eps, steps, restarts, norm, acc}, ...]}``."""
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    robust: List[Dict[str, object]] = []
    for spec in specs:
        acc = robust_accuracy(model, xt, yt, spec, seed=seed)
        robust.append(
            {
                "attack": spec.name,
                "eps": spec.eps,
                "steps": spec.steps,
                "restarts": spec.restarts,
                "norm": spec.norm,
                **spec.params,
                "acc": acc,
            }
        )
    return {"clean_acc": accuracy(model, xt, yt), "n": int(len(x)), "robust": robust}
