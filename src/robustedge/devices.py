"""``--device auto|cpu|cuda`` resolution."""

from __future__ import annotations

import torch

from robustedge.errors import RobustEdgeError


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
    raise RobustEdgeError(f"unknown device '{name}' (known: auto, cpu, cuda)")
