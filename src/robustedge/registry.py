"""Explicit registries filled by decorators (timm's ``@register_model`` pattern).

Nothing is built at import time: a registry maps a name to a factory. A duplicate
name raises; an unknown name lists the known ones.
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, List, TypeVar

from robustedge.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory mapping for one kind of component (models, data sets, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; raises on duplicates."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names())
            raise UnknownNameError(f"unknown {self.kind} '{name}' (known: {known})") from None

    def names(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
