"""What the API accepts, turned into what the stages take: configs from objects or keyword
settings, model and data objects into the ``MODELS`` / ``DATASETS`` registries."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar, Union

from robustedge.config import ConfigMixin
from robustedge.data import Dataset, from_torch, register_dataset
from robustedge.errors import RobustEdgeError
from robustedge.models import MODELS
from robustedge.models.checkpoint import load_spec
from robustedge.models.instance import ModuleEntry, register_model

__all__ = ["DataLike", "ModelLike", "build_config", "data_name", "model_name", "run_model"]

C = TypeVar("C", bound=ConfigMixin)
# a registered name, a robustedge Dataset, or a (train, test) pair of torch Datasets/DataLoaders
DataLike = Union[str, Dataset, Tuple[Any, Any]]
# a registered name, "module.path:factory", or an nn.Module object
ModelLike = Any


def build_config(cls: Type[C], config: Any, settings: Mapping[str, Any]) -> C:
    """``cls`` from ``config`` (an instance, a mapping, or None) with ``settings`` on top;
    an unknown setting is one line naming the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    from_keys = getattr(cls, "from_keys", None)  # CompressConfig: flat keys, method options
    if config is not None and not isinstance(config, (cls, Mapping)):
        raise RobustEdgeError(f"config must be a {cls.__name__} or a mapping, not {config!r}")
    if isinstance(config, cls) and not settings:
        return config
    given: Dict[str, Any] = dict(config) if isinstance(config, Mapping) else {}
    if from_keys is not None:
        if isinstance(config, cls):
            given = config.to_dict()
        built: C = from_keys(**{**given, **settings})
        return built
    unknown = sorted(set(settings) - known)
    if unknown:
        raise RobustEdgeError(
            f"unknown {cls.__name__} setting(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    if isinstance(config, cls):
        changed: C = dataclasses.replace(config, **settings)  # type: ignore[type-var]
        return changed
    made: C = cls.from_dict({**given, **settings})
    return made


def data_name(data: Optional[DataLike]) -> Optional[str]:
    """The ``DATASETS`` name of ``data``: a name as is; a Dataset (or a (train, test) pair of
    map-style torch data sets / DataLoaders, streamed: read per batch, see
    :func:`robustedge.data.from_torch`) registered under its name."""
    if data is None or isinstance(data, str):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        data = from_torch(*data, stream=True)
    if not isinstance(data, Dataset):
        raise RobustEdgeError(
            "data must be a data set name, a robustedge Dataset or a (train, test) pair of "
            f"torch Datasets / DataLoaders, not {type(data).__name__}"
        )
    return register_dataset(data)


def model_name(model: ModelLike) -> Optional[str]:
    """The ``MODELS`` name of ``model``: a name (or ``module:factory``) as is; an nn.Module
    object registered under its class name."""
    if model is None or isinstance(model, str):
        return model
    return register_model(model)


def run_model(run: Union[str, os.PathLike[str]], model: ModelLike) -> None:
    """Make a run's recorded model name build ``model`` (an nn.Module object given again to
    reload a run whose architecture is the user's own): registered under that name. A run of
    a built-in or importable model reloads by path: ``model`` is then refused."""
    if model is None:
        return
    spec, _ = load_spec(run)
    if ":" in spec.name or (spec.name in MODELS and not isinstance(MODELS[spec.name], ModuleEntry)):
        raise RobustEdgeError(
            f"{run} was trained with the model '{spec.name}', which reloads by path: give no model"
        )
    register_model(model, spec.name)
