"""Generative models of the data manifold, for on-manifold attacks and training.

``load_manifold(source)`` accepts a manifold run folder (a class-conditional VAE trained with
`robustedge manifold train`), the name of a data set with a known generator (``synthetic``:
the exact manifold), or a :class:`Manifold` object (returned as is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union, overload

from robustedge.errors import CheckpointError
from robustedge.manifold.base import Manifold, ManifoldMismatchError
from robustedge.registry import Registry

GENERATORS: Registry = Registry("known generator")

__all__ = ["GENERATORS", "Manifold", "ManifoldMismatchError", "load_manifold"]


@GENERATORS.register("synthetic")
def _synthetic(data_dir: Optional[str] = None) -> Manifold:
    from robustedge.manifold.synthetic import synthetic_manifold

    return synthetic_manifold(data_dir)


@GENERATORS.register("synthetic32")
def _synthetic32(data_dir: Optional[str] = None) -> Manifold:
    from robustedge.manifold.synthetic import synthetic_manifold

    return synthetic_manifold(data_dir, "synthetic32")


@overload
def load_manifold(source: None, data_dir: Optional[str] = None) -> None: ...


@overload
def load_manifold(
    source: Union[str, Path, Manifold], data_dir: Optional[str] = None
) -> Manifold: ...


def load_manifold(
    source: Union[str, Path, Manifold, None], data_dir: Optional[str] = None
) -> Optional[Manifold]:
    """The Manifold object of a ``manifold`` setting: a manifold run folder (a VAE trained
    with `robustedge manifold train`), a known generator's name (``synthetic``), or a
    Manifold (returned as is); None when not given. ``data_dir``: where a generator's data
    lives."""
    if source is None:
        return None
    if isinstance(source, Manifold):
        return source
    path = Path(source)
    if path.is_dir():
        from robustedge.manifold.vae import load_vae

        return load_vae(path)
    name = str(source)
    if name in GENERATORS:
        factory: Callable[..., Manifold] = GENERATORS.get(name)
        return factory(data_dir=data_dir)
    raise CheckpointError(
        f"manifold '{name}' is neither a manifold run folder nor a known generator "
        f"(known: {', '.join(GENERATORS.names())})"
    )
