"""A user's own ``nn.Module`` object as a ``MODELS`` entry.

:func:`register_model` puts a model object in the ``MODELS`` registry under a name (default:
its class name). Building that name returns a deep copy of the object, so a run trains and
compresses exactly the user's architecture and initial weights. A run folder records the name;
a later process passes the model again (``load_run(run, model=MyNet())``) or registers it
again under the same name.
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Tuple

import torch
import torch.nn as nn

from robustedge.errors import RobustEdgeError
from robustedge.models.base import MODELS

__all__ = ["ModuleEntry", "check_output", "register_model"]


class ModuleEntry:
    """A ``MODELS`` factory that returns a copy of one model object (kwargs are refused)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, input_shape: Tuple[int, int, int], num_classes: int, **kwargs: Any):
        if kwargs:
            raise RobustEdgeError(
                f"model {type(self.module).__name__} is a registered object: it takes no "
                f"model arguments (got {', '.join(sorted(kwargs))})"
            )
        return copy.deepcopy(self.module)


def register_model(module: nn.Module, name: Optional[str] = None) -> str:
    """Register the model object ``module`` in ``MODELS`` under ``name`` (default: its class
    name) and return the name. A name held by another registered object is taken over; a
    built-in model's name is refused."""
    if not isinstance(module, nn.Module):
        raise RobustEdgeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    name = name or type(module).__name__
    if ":" in name:
        raise RobustEdgeError(f"model name {name!r} must not contain ':'")
    if name in MODELS:
        entry = MODELS.get(name)
        if not isinstance(entry, ModuleEntry):
            raise RobustEdgeError(
                f"model name '{name}' is a registered model; give your model another name"
            )
        if entry.module is module:
            return name
        MODELS.unregister(name)
    MODELS.register(name, ModuleEntry(module))
    return name


def check_output(module: nn.Module, input_shape: Tuple[int, ...], num_classes: int) -> None:
    """Refuse a model whose output on one input of ``input_shape`` is not ``num_classes``
    logits, naming what it gave (before any training starts)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros((2, *input_shape)))
    except Exception as e:  # the user's forward: any failure is reported in one line
        raise RobustEdgeError(
            f"model {type(module).__name__} fails on inputs of shape {tuple(input_shape)}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RobustEdgeError(
            f"model {type(module).__name__} must return N x {num_classes} logits for inputs "
            f"of shape {tuple(input_shape)}; it returned {got}"
        )
