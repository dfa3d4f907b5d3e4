"""Model registry and the spec that lets a run be rebuilt from its folder alone."""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Tuple

import torch.nn as nn

from robustedge.errors import RobustEdgeError
from robustedge.registry import Registry

MODELS: Registry = Registry("model")


@dataclass(frozen=True)
class ModelSpec:
    """What to build: a registry name (or ``module.path:factory``), input shape, classes, kwargs."""

    name: str
    input_shape: Tuple[int, int, int]
    num_classes: int
    kwargs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.input_shape)
        if len(shape) != 3 or min(shape) <= 0:
            raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {shape}")
        object.__setattr__(self, "input_shape", shape)
        if int(self.num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ModelSpec:
        return cls(d["name"], tuple(d["input_shape"]), int(d["num_classes"]), d.get("kwargs", {}))


def build_model(spec: ModelSpec) -> nn.Module:
    """Build an untrained model from its spec (registry name or ``module.path:factory``)."""
    if ":" in spec.name:
        factory = _import_factory(spec.name)
    else:
        factory = MODELS.get(spec.name)
    try:
        model = factory(input_shape=spec.input_shape, num_classes=spec.num_classes, **spec.kwargs)
    except TypeError as e:
        raise RobustEdgeError(f"cannot build model '{spec.name}': {e}") from None
    if not isinstance(model, nn.Module):
        raise RobustEdgeError(
            f"factory '{spec.name}' returned {type(model).__name__}, not a Module"
        )
    return model


def _import_factory(path: str):
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RobustEdgeError(f"cannot import model module '{module_name}': {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise RobustEdgeError(f"'{attr}' in module '{module_name}' is not a callable factory")
    return factory


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
