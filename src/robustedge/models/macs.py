"""The one MAC counter: multiply-accumulates of Conv2d / Linear layers for one input."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn as nn


def count_macs(model: nn.Module, input_shape: Tuple[int, int, int]) -> Dict[str, int]:
    """MACs of one forward pass at batch 1, over every Conv2d and Linear layer.

    ``dense`` counts every weight; ``nonzero`` scales each layer by its weight density (what a
    sparse kernel could skip). A physically shrunk model has both smaller.
    """
    dense, nonzero, hooks = [0], [0.0], []

    def hook(mod: nn.Module, inp, out) -> None:
        w = mod.weight
        per_output = w[0].numel()  # in_channels / groups * kh * kw, or in_features
        macs = out[0].numel() * per_output
        dense[0] += int(macs)
        nonzero[0] += macs * float((w != 0).float().mean())

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        device = next(iter(model.parameters()), torch.empty(0)).device
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {"dense": dense[0], "nonzero": int(round(nonzero[0]))}
