"""Click options generated from config fields: the command line never restates a default.

Every field declared with :func:`robustedge.config.setting` becomes one option: its name
(``--field-name`` unless the setting names another), its type (from the type hint: flags for
``bool``, repeatable options for tuples, ``KEY=VALUE`` pairs for mappings, a choice for an
Enum), its default and its help. Names of registered components (``{choices}`` in a help text)
are read when the help is shown, so a component registered by a plugin is listed too.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import click

from robustedge.config import help_text


class LazyHelpOption(click.Option):
    """A click option whose help is made when help is shown (``help_fn() -> str``), so names
    read from a registry include components registered after the command was built."""

    def __init__(self, *args: Any, help_fn: Optional[Callable[[], str]] = None, **kw: Any):
        self.help_fn = help_fn
        super().__init__(*args, **kw)

    def get_help_record(self, ctx: click.Context) -> Any:
        if self.help_fn is not None:
            self.help = self.help_fn()
        return super().get_help_record(ctx)


class ConfigOption(LazyHelpOption):
    """The option of one config field: its help is the field's, rendered when shown."""

    def __init__(self, *args: Any, config_field: dataclasses.Field, **kw: Any):
        self.config_field = config_field
        suffix = kw.pop("help_suffix", "")
        super().__init__(*args, help_fn=lambda: help_text(config_field) + suffix, **kw)


def lazy_option(*decls: str, help_fn: Callable[[], str], **kw: Any) -> Callable:
    """``click.option`` with a help text made when shown (see :class:`LazyHelpOption`)."""
    return click.option(*decls, cls=LazyHelpOption, help_fn=help_fn, **kw)


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def option_name(f: dataclasses.Field) -> Optional[str]:
    """The option a field becomes (``--field-name``), or None when the CLI does not offer it."""
    cli = f.metadata.get("cli")
    if cli is False:
        return None
    return cli if isinstance(cli, str) else "--" + f.name.replace("_", "-")


def field_option(f: dataclasses.Field, tp: Any, **overrides: Any) -> Callable:
    """The click option decorator of one config field (``overrides``: extra click kwargs)."""
    name = option_name(f)
    if name is None:
        raise ValueError(f"field '{f.name}' is not offered on the command line")
    default = f.default if f.default is not dataclasses.MISSING else None
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    base = _unwrap_optional(tp)
    kw: Dict[str, Any] = {"default": default, "show_default": default not in (None, (), {})}
    decls: List[str] = [name, f.name]
    origin = typing.get_origin(base)
    if base is bool:
        if default is True or default is None:
            decls = [f"{name}/--no-{name[2:]}", f.name]
        else:
            kw.update(is_flag=True, show_default=False)
    elif origin in (tuple, list):
        kw.update(multiple=True, type=typing.get_args(base)[0])
    elif origin is dict:
        # kept as "KEY=VALUE" strings (torchrun relaunches re-send them); parsed into a
        # mapping by config_from_options
        kw.update(multiple=True, metavar="KEY=VALUE", default=(), show_default=False)
    elif isinstance(base, type) and issubclass(base, enum.Enum):
        kw.update(type=click.Choice([m.value for m in base]))
        kw["default"] = default.value if isinstance(default, enum.Enum) else default
    elif base in (int, float, str):
        kw["type"] = base
    if f.metadata.get("metavar"):
        kw["metavar"] = f.metadata["metavar"]
    kw.update(overrides)
    return click.option(*decls, cls=ConfigOption, config_field=f, **kw)


def config_options(
    cls: Any,
    *,
    only: Optional[Iterable[str]] = None,
    exclude: Iterable[str] = (),
    overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> Callable:
    """Decorator: one click option per field of config ``cls`` (in field order), except the
    ``exclude``d ones and those whose setting says ``cli=False``; ``only`` keeps just those
    (in that order). ``overrides[field]``: extra click kwargs (e.g. ``required=True``)."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = list(only) if only is not None else list(by_name)
    chosen = [by_name[n] for n in names if n not in set(exclude) and option_name(by_name[n])]
    overrides = overrides or {}

    def apply(func: Callable) -> Callable:
        for f in reversed(chosen):
            func = field_option(f, hints[f.name], **overrides.get(f.name, {}))(func)
        return func

    return apply


def config_fields(cls: Any) -> List[str]:
    """The names of the fields of ``cls`` that the command line offers."""
    return [f.name for f in dataclasses.fields(cls) if option_name(f)]


def config_from_options(cls: Any, opts: Mapping[str, Any], **fixed: Any) -> Any:
    """``cls`` built from the parsed options that are its fields, plus ``fixed`` values."""
    from robustedge.commands import parse_kv

    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    given = {k: v for k, v in opts.items() if k in by_name and k not in fixed}
    for k, v in list(given.items()):
        if typing.get_origin(_unwrap_optional(hints[k])) is dict and not isinstance(v, dict):
            given[k] = parse_kv(v or (), option_name(by_name[k]) or k)
        elif isinstance(v, list):
            given[k] = tuple(v)
    return cls(**{**given, **fixed})


def stack(*decorators: Callable) -> Callable:
    """Apply click option decorators in the order listed (as stacked decorators show them)."""

    def apply(f: Callable) -> Callable:
        for deco in reversed(decorators):
            f = deco(f)
        return f

    return apply
