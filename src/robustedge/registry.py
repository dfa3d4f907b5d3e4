"""Explicit registries filled by decorators (timm's ``@register_model`` pattern).

Nothing is built at import time: a registry maps a name to a factory (or a small descriptor).
A duplicate name raises; an unknown name lists the known ones. A registry behaves as a
read-only mapping (``in``, ``len``, iteration in sorted order, ``items()``), and is the only
list of the names of its kind: help texts, recipe checks and documentation read it.
Standard library only (the board side ships this file).
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, List, Mapping, Optional, Tuple, TypeVar

from robustedge.errors import UnknownNameError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A read-only name -> factory mapping for one kind of component (models, data sets, ...).

    ``register(name)`` is the only way in; ``get(name)`` (or ``registry[name]``) raises
    :class:`~robustedge.errors.UnknownNameError` listing the known names.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str, obj: Optional[T] = None) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; raises on duplicates. With ``obj``
        given, registers it at once (and returns the identity decorator)."""

        def deco(o: T) -> T:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = o
            return o

        if obj is not None:
            deco(obj)
            return lambda o: o
        return deco

    def unregister(self, name: str) -> T:
        """Remove ``name`` (for tests and plugins that register a temporary component)."""
        self.get(name)
        return self._items.pop(name)

    def get(self, name: str) -> T:  # type: ignore[override]
        """The entry of ``name``; an unknown name raises, listing the known ones."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"unknown {self.kind} '{name}' (known: {self.known()})"
            ) from None

    def names(self) -> List[str]:
        return sorted(self._items)

    def known(self, sep: str = ", ") -> str:
        """The known names joined by ``sep``: the one way help texts and errors list them."""
        return sep.join(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> List[Tuple[str, T]]:  # type: ignore[override]
        return [(n, self._items[n]) for n in self.names()]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {self.known()})"
