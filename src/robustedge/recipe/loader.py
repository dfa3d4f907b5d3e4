"""YAML -> plain Python with the line of every key, and a typed dataclass builder.

`parse_yaml` composes the YAML node tree (``yaml.compose``) so each value keeps the line it
came from; `build` turns a mapping into a frozen dataclass, checking unknown keys and types
against the dataclass's type hints and reporting the first problem as a one-line
:class:`RecipeError` naming ``file:line: key.path``.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any, Dict, Optional, Tuple

import yaml

from robustedge.config import FieldError
from robustedge.errors import RobustEdgeError
from robustedge.io import compose_yaml

__all__ = ["FieldError", "Located", "RecipeError", "build", "check_fields", "parse_yaml"]

Lines = Dict[str, int]


class RecipeError(RobustEdgeError):
    """A recipe problem, located: ``recipe.yaml:12: compress[0].sparsity[1]: ...``."""


class Located:
    """Turns a key path into ``file:line: path: message`` errors."""

    def __init__(self, source: str, lines: Lines) -> None:
        self.source, self.lines = source, lines

    def line(self, path: str) -> int:
        """Line of ``path``, or of its nearest ancestor that has one (1 for the root)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = _parent(path)
        return self.lines.get("", 1)

    def error(self, path: str, message: str) -> RecipeError:
        where = f"{path}: " if path else ""
        return RecipeError(f"{self.source}:{self.line(path)}: {where}{message}")


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def parse_yaml(text: str, source: str = "<recipe>") -> Tuple[Any, Lines]:
    """YAML text -> (plain value, {key path: 1-based line}); one-line error on bad YAML."""
    try:
        node, constructor = compose_yaml(text, source)  # non-core tags refused with file:line
    except RobustEdgeError as e:
        raise RecipeError(str(e)) from None
    lines: Lines = {}
    if node is None:
        return None, lines
    lines[""] = node.start_mark.line + 1
    try:
        return _value(node, "", lines, constructor, source), lines
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark is not None else lines[""]
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{source}:{line}: invalid YAML: {problem}") from None


def _value(node: yaml.Node, path: str, lines: Lines, cons: Any, source: str) -> Any:
    # compose_yaml has bounded the expanded size (aliases), so this recursion is bounded too
    if isinstance(node, yaml.MappingNode):
        out: Dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = cons.construct_object(key_node, deep=True)
            sub = join(path, key)
            if key in out:
                raise RecipeError(f"{source}:{key_node.start_mark.line + 1}: {sub}: duplicate key")
            lines[sub] = key_node.start_mark.line + 1
            out[key] = _value(value_node, sub, lines, cons, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            sub = join(path, i)
            lines[sub] = item.start_mark.line + 1
            items.append(_value(item, sub, lines, cons, source))
        return items
    return cons.construct_object(node, deep=True)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(type_name(a) for a in args) + " or null"
    if origin in (tuple, list):
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, path: str, loc: Located) -> Any:
    """Check ``value`` against type hint ``tp``; lists become tuples, nested mappings become
    dataclasses. Raises a located RecipeError on a mismatch."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in typing.get_args(tp):
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return coerce(value, args[0], path, loc)
    if origin in (tuple, list):
        item_tp = typing.get_args(tp)[0]
        items = value if isinstance(value, list) else [value]
        return tuple(coerce(v, item_tp, join(path, i), loc) for i, v in enumerate(items))
    if origin is dict:
        if not isinstance(value, dict):
            raise loc.error(path, f"expected a mapping, got {_show(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, loc)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        known = [m.value for m in tp]
        if value not in known:
            raise loc.error(path, f"expected {type_name(tp)}, got {_show(value)}")
        return value
    if _matches(value, tp):
        return float(value) if tp is float else value
    raise loc.error(path, f"expected {type_name(tp)}, got {_show(value)}")


def _matches(value: Any, tp: Any) -> bool:
    if isinstance(value, bool):
        return tp is bool
    if tp is float:
        return isinstance(value, (int, float))
    return isinstance(value, tp)


def _show(value: Any) -> str:
    kind = {dict: "a mapping", list: "a list", type(None): "null"}.get(type(value))
    return kind or f"{type(value).__name__} {value!r}"


def check_keys(value: Any, known: Any, path: str, loc: Located, what: str) -> Dict[str, Any]:
    """``value`` must be a mapping whose keys are all in ``known``."""
    if not isinstance(value, dict):
        raise loc.error(path, f"expected a mapping ({what}), got {_show(value)}")
    for key in value:
        if key not in known:
            raise loc.error(
                join(path, key), f"unknown key '{key}' in {what} (known: {', '.join(known)})"
            )
    return value


def field_types(cls: Any, exclude: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """{field name: resolved type hint} of a dataclass, minus ``exclude``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in exclude}


def check_fields(
    value: Any, types: Dict[str, Any], path: str, loc: Located, what: str
) -> Dict[str, Any]:
    """Keys known and values typed per ``types``; returns the coerced mapping."""
    check_keys(value, list(types), path, loc, what)
    return {k: coerce(v, types[k], join(path, k), loc) for k, v in value.items()}


def build(cls: Any, value: Any, path: str, loc: Located, shorthand: Optional[str] = None) -> Any:
    """A frozen dataclass ``cls`` from mapping ``value`` (a scalar fills ``shorthand``)."""
    shorthand = shorthand or getattr(cls, "SHORTHAND", None)
    if shorthand and value is not None and not isinstance(value, dict):
        value = {shorthand: value}
    if value is None:
        value = {}
    kwargs = check_fields(value, field_types(cls), path, loc, cls.__name__)
    for f in dataclasses.fields(cls):
        if (
            f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            raise loc.error(path, f"missing key '{f.name}' ({cls.__name__})")
    try:
        return cls(**kwargs)
    except FieldError as e:
        raise loc.error(join(path, e.key), str(e)) from None
    except ValueError as e:
        raise loc.error(path, str(e)) from None
