"""``--device auto|cpu|cuda`` resolution."""

from __future__ import annotations

import torch

from robustedge.errors import RobustEdgeError

DEVICES = ("auto", "cpu", "cuda")  # cuda:N names one GPU


def check_device(name: str) -> str:
    """``name`` if it names a device (auto, cpu, cuda, cuda:N), else a ValueError listing them;
    whether that device exists here is checked when it is resolved."""
    if name in DEVICES or (isinstance(name, str) and name.startswith("cuda:")):
        return name
    raise ValueError(f"unknown device '{name}' (known: {', '.join(DEVICES)}, cuda:N)")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RobustEdgeError("--device cuda was asked for but no CUDA GPU is available")
        return torch.device(name)
    try:
        check_device(name)
    except ValueError as e:
        raise RobustEdgeError(str(e)) from None
    raise RobustEdgeError(f"unknown device '{name}'")
