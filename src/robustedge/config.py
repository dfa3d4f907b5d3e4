"""The floor of every config: settings with their help, strict construction, shared validators.

Configs live with what they configure (``training.config.TrainConfig``,
``compress.config.CompressConfig``, ``export.config.ExportConfig``,
``device.board.config.BenchConfig``, ...). Each is a frozen dataclass that validates itself in
``__post_init__`` (``ValueError`` with a useful message) and declares every field with
:func:`setting`: its one default and its help text. The command line
(``robustedge.commands.options``) and the recipe build their options and keys from these
fields, so a default is written once, here in the config, and nowhere else.

Standard library only: the board side (``device/board``) uses it too.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import MISSING, fields
from typing import Any, Callable, Dict, Iterable, Optional, Union

Choices = Union[Callable[[], Iterable[str]], type, None]


class FieldError(ValueError):
    """Raised by a config's ``__post_init__`` about one of its fields (``key``), so that the
    recipe can point at that key's line; anywhere else it is the ValueError it subclasses."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class Optim(str, enum.Enum):
    ADAM = "adam"
    SGD = "sgd"


def setting(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Any = MISSING,
    choices: Choices = None,
    cli: Optional[Union[str, bool]] = None,
    metavar: Optional[str] = None,
) -> Any:
    """A config field with its help text.

    ``choices``: an Enum class, or a callable returning the valid names (a registry's
    ``names``), read when help is shown, so components registered later are listed too.
    ``cli``: the option's name (``"--eval-attack"``) when it is not ``--field-name``, or
    ``False`` for a field the command line does not offer. ``help`` may hold ``{choices}``.
    """
    meta = {"help": help, "choices": choices, "cli": cli, "metavar": metavar}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def choice_names(choices: Choices) -> list:
    """The valid names of a setting's ``choices`` (an Enum or a callable), else ``[]``."""
    if choices is None:
        return []
    if isinstance(choices, type) and issubclass(choices, enum.Enum):
        return [m.value for m in choices]
    return list(choices())


def help_text(f: dataclasses.Field) -> str:
    """A field's help with ``{choices}`` filled in from its choices (``a | b | c``)."""
    text = f.metadata.get("help", "")
    if "{choices}" in text:
        text = text.replace("{choices}", " | ".join(choice_names(f.metadata.get("choices"))))
    return text


def default_of(cls: Any, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (its factory called); MISSING if none."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            return MISSING
    raise KeyError(f"{cls.__name__} has no field '{name}'")


def enum_value(cls, value, what):
    """``cls(value)``, or a ValueError listing the known values."""
    try:
        return cls(value)
    except ValueError:
        known = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown {what} '{value}' (known: {known})") from None


def strict_from_dict(cls, d: Dict[str, Any]):
    """Build dataclass ``cls`` from ``d``; unknown keys are a ValueError naming them."""
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(unknown)}")
    return cls(**d)


def plain(value: Any) -> Any:
    """Enums to their values, tuples to lists, nested configs to dicts (YAML / JSON ready)."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return (
            to_dict() if to_dict else {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        )
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


class ConfigMixin:
    """``to_dict`` / ``from_dict`` / ``replace`` for a frozen config dataclass."""

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Any:
        return strict_from_dict(cls, d)

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def check_positive(obj: Any, *names: str) -> None:
    """ValueError naming the first of ``names`` whose value on ``obj`` is not > 0."""
    for n in names:
        v = getattr(obj, n)
        if not (v > 0):
            raise ValueError(f"{n} must be > 0, got {v}")


def check_fraction(obj: Any, name: str, low_open: bool = False, high_open: bool = False) -> None:
    """ValueError unless ``getattr(obj, name)`` lies in [0, 1] (ends open as asked)."""
    v = getattr(obj, name)
    ok = (0 < v if low_open else 0 <= v) and (v < 1 if high_open else v <= 1)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lo}0, 1{hi}, got {v}")
