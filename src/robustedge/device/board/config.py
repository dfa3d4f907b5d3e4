"""`BenchConfig`: how a bundle is measured on a board, the one definition of every bench setting.

The board runner's command line (``run_bundle.py``), the host's ``robustedge bench`` options, the
recipe's ``devices:`` keys and the host -> board argument list (:meth:`BenchConfig.to_argv`) are
all made from these fields, so each default is written once, here. Standard library only (it
runs on the board, shipped in every bundle): no numpy at import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from robustedge.config import ConfigMixin, FieldError, help_text, setting

MIN_RUNS = 200  # the fewest timed invokes that give a p99 (0 skips timing)
ALL = "all"  # ``--square-n all``: every image of the bundle's evaluation set


def backend_names() -> List[str]:
    """The interpreters the board runner knows (``backends.BACKENDS``); read lazily, so that a
    board without numpy still parses its command line (the runner then says what to install)."""
    try:
        from robustedge.device.board.backends import BACKENDS
    except ImportError:
        return []
    return BACKENDS.names()


@dataclass(frozen=True)
class BenchConfig(ConfigMixin):
    """What the board runner measures and how (``format`` None: the bundle's default format)."""

    format: Optional[str] = setting(
        None, help="Model format to run (default: the bundle's default format).", metavar="FORMAT"
    )
    backend: Optional[str] = setting(
        None,
        help="Interpreter: {choices} (default: the first installed one that reads the format).",
        choices=backend_names,
        metavar="NAME",
    )
    threads: int = setting(1, help="Interpreter threads.")
    runs: int = setting(200, help=f"Timed invokes: >= {MIN_RUNS}, or 0 to skip timing.")
    warmup: int = setting(20, help="Untimed invokes before the timed ones.")
    # The on-board Square attack is strong by default (the host's worst-case suite runs
    # Square-1000 too): 1,000 queries per image and restart, one restart, on every image of the
    # bundle's evaluation set. Less is allowed, and every result measured with less is labelled
    # "weaker than default" (``measure.weaker_than_default``).
    square_queries: int = setting(
        1000,
        help="On-board Square queries per image and restart; 0 skips the attack (fewer than "
        "the default are labelled 'weaker than default' in the results).",
    )
    square_restarts: int = setting(
        1, help="On-board Square restarts (on the images not yet broken)."
    )
    square_n: Optional[int] = setting(
        None,
        help="Images the on-board Square attacks: a number, or 'all' (the bundle's whole "
        "evaluation set). Fewer than all are labelled 'weaker than default'.",
        metavar="N|all",
    )
    square_eps: Optional[float] = setting(
        None, help="On-board Square's Linf budget (default: the eps the bundle records)."
    )
    reference_kernels: bool = setting(
        False, help="TFLite BUILTIN_REF kernels: int8 outputs bit-identical across CPUs."
    )
    refuse_throttled: bool = setting(
        False,
        help="Fail (runner exit 6) instead of flagging a run during which the board throttled "
        "or changed CPU frequency.",
    )
    emulated: bool = setting(False, help="Label the results emulated (set by emulating targets).")
    seed: int = setting(0, help="On-board Square's random seed.")

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise FieldError("threads", f"threads must be >= 1, got {self.threads}")
        if self.runs != 0 and self.runs < MIN_RUNS:
            raise FieldError(
                "runs", f"runs must be >= {MIN_RUNS} (or 0 to skip timing), got {self.runs}"
            )
        for name in ("warmup", "square_queries"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"{name} must be >= 0, got {getattr(self, name)}")
        if self.square_n is not None and self.square_n < 1:
            raise FieldError(
                "square_n", f"square_n must be >= 1 (or all images), got {self.square_n}"
            )
        if self.square_restarts < 1:
            raise FieldError(
                "square_restarts", f"square_restarts must be >= 1, got {self.square_restarts}"
            )
        if self.square_eps is not None and not 0 < self.square_eps <= 1:
            raise FieldError(
                "square_eps", f"square_eps must lie in (0, 1] (pixel units), got {self.square_eps}"
            )

    def to_argv(self) -> List[str]:
        """The board runner's arguments for this config (every set value, explicitly, so an
        older bundle's runner measures what this host asks); ``from_argv`` inverts it."""
        argv: List[str] = []
        for f in dataclasses.fields(BenchConfig):  # a subclass's own fields are not settings
            value = getattr(self, f.name)
            flag = option(f)
            if isinstance(value, bool):
                argv += [flag] if value else []
            elif f.name == "square_n":
                argv += [flag, ALL if value is None else str(value)]
            elif value is not None:
                argv += [flag, str(value)]
        return argv

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> BenchConfig:
        """The config a runner command line gives; ValueError on anything else in it."""
        p = cls.parser(exit_on_error=False, add_help=False)
        try:
            ns, rest = p.parse_known_args(list(argv))
        except argparse.ArgumentError as e:
            raise ValueError(str(e)) from None
        if rest:
            raise ValueError(f"not a bench setting: {' '.join(rest)}")
        return cls.from_namespace(ns)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> BenchConfig:
        """The config from parsed arguments (other attributes of ``ns`` are ignored)."""
        return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def parser(cls, **kw: Any) -> argparse.ArgumentParser:
        """An argparse parser with one option per field (``kw`` go to ArgumentParser)."""
        p = argparse.ArgumentParser(**kw)
        cls.add_arguments(p)
        return p

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        """Add one option per field to ``p``: name, type, default and help from the setting."""
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            text = help_text(f)
            base = _unwrap_optional(hints[f.name])
            if base is bool:
                p.add_argument(option(f), action="store_true", help=text)
                continue
            shown = CLI_DEFAULTS.get(f.name, f.default)  # argparse converts a text default too
            if shown is not None:
                text += " (default: %(default)s)"
            kind = ARG_TYPES.get(f.name, base)
            p.add_argument(
                option(f), type=kind, default=shown, help=text, metavar=f.metadata["metavar"]
            )


def option(f: dataclasses.Field) -> str:
    """The command-line option of field ``f`` (``--square-n``)."""
    return "--" + f.name.replace("_", "-")


def parse_square_n(text: str) -> Optional[int]:
    """``--square-n``: ``all`` (None: every image) or a whole number; ValueError otherwise
    (the range is BenchConfig's to check)."""
    if str(text).strip().lower() == ALL:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"need a number of images or '{ALL}', got {text!r}") from None


def _arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: its ValueError message becomes the usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


ARG_TYPES: Dict[str, Callable[[str], Any]] = {"square_n": _arg_type(parse_square_n)}
# defaults as the command line writes them, where that is not the value itself
CLI_DEFAULTS: Dict[str, str] = {"square_n": ALL}


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp
