"""Rebuild layers of a freshly built model to the shapes found in a saved state dict.

A physically pruned ("shrunk") network has fewer channels than its :class:`ModelSpec` builds.
:func:`resize_to_state` replaces every ``Conv2d`` / ``BatchNorm2d`` / ``Linear`` whose saved
shapes differ with a new module of the saved size (in/out channels; depthwise convs keep
``groups == in_channels``), so that ``load_state_dict(strict=True)`` then succeeds. Layers
without parameters (pooling, flatten, activations) need no change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
import torch.nn as nn

from robustedge.errors import CheckpointError


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _resized_conv(m: nn.Conv2d, w: torch.Tensor, has_bias: bool) -> nn.Conv2d:
    out_c, in_per_group = int(w.shape[0]), int(w.shape[1])
    if m.groups > 1 and m.groups == m.in_channels:  # depthwise (channel multiplier kept)
        mult = m.out_channels // m.groups
        groups = out_c // mult
        in_c = groups * in_per_group
    else:
        groups = m.groups
        in_c = in_per_group * groups
    return nn.Conv2d(
        in_c,
        out_c,
        m.kernel_size,
        stride=m.stride,
        padding=m.padding,
        dilation=m.dilation,
        groups=groups,
        bias=has_bias,
        padding_mode=m.padding_mode,
    )


def _resized(m: nn.Module, prefix: str, state: Dict[str, torch.Tensor]) -> nn.Module:
    w = state.get(f"{prefix}weight")
    if isinstance(m, nn.Conv2d) and w is not None and w.shape != m.weight.shape:
        return _resized_conv(m, w, f"{prefix}bias" in state)
    if isinstance(m, nn.Linear) and w is not None and w.shape != m.weight.shape:
        return nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=f"{prefix}bias" in state)
    if isinstance(m, nn.BatchNorm2d):
        ref = state.get(f"{prefix}running_mean", w)
        if ref is not None and ref.shape[0] != m.num_features:
            return nn.BatchNorm2d(
                int(ref.shape[0]),
                eps=m.eps,
                momentum=m.momentum,
                affine=m.affine,
                track_running_stats=m.track_running_stats,
            )
    return m


def resize_to_state(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> nn.Module:
    """Replace, in place, the layers whose saved shapes differ; returns ``model``."""
    for name, m in list(model.named_modules()):
        if not name:
            continue
        new = _resized(m, f"{name}.", state_dict)
        if new is not m:
            _set_module(model, name, new.to(next(m.parameters(), torch.empty(0)).device))
    return model


def resize_from_file(model: nn.Module, path: Path) -> nn.Module:
    """:func:`resize_to_state` with the state read from a safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt weights file {path}: {e}") from None
    return resize_to_state(model, state)
