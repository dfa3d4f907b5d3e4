"""One place for each default and each name (issue 21).

- No numeric literal is given for a watched setting (eps, steps, margins, Square's budget, ...)
  outside the module that owns that default: everyone else imports the constant or reads the
  config field's default.
- Every constant that names a default is defined once in the package.
- Every command-line option that is a config field takes the field's default and help from the
  config (generated), and no hand-written option restates a config field.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import click
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "robustedge"

# Settings whose defaults must be written once. A literal 0 (off / none) is not a default.
WATCHED = {
    "eps",
    "steps",
    "restarts",
    "n_queries",
    "p_init",
    "eta",
    "trades_beta",
    "clean_margin",
    "robust_margin",
    "calib_samples",
    "square_queries",
    "square_restarts",
    "square_n",
    "runs",
    "warmup",
}
# Where a literal for a watched name is the definition itself, not a restatement.
OWNERS = {
    "attacks/suite.py",  # the named suites' own attack settings are their definition
    "attacks/corruptions.py",  # corruption severities are data, not defaults
}


def _literal_number(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
        and node.value != 0
    )


def literal_defaults(tree: ast.AST) -> Iterator[Tuple[int, str]]:
    """(line, name) of every watched name given a non-zero numeric literal: as a parameter
    default, a keyword argument, a dataclass field default, or a ``setting(...)`` default."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            for arg, default in zip(pos[len(pos) - len(a.defaults) :], a.defaults):
                if arg.arg in WATCHED and _literal_number(default):
                    yield default.lineno, arg.arg
            for arg, default in zip(a.kwonlyargs, a.kw_defaults):
                if default is not None and arg.arg in WATCHED and _literal_number(default):
                    yield default.lineno, arg.arg
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in WATCHED and _literal_number(kw.value):
                    yield kw.value.lineno, kw.arg
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, value = node.target.id, node.value
            if name not in WATCHED or value is None:
                continue
            if isinstance(value, ast.Call) and value.args:  # setting(0.1, help=...)
                value = value.args[0]
            if _literal_number(value):
                yield value.lineno, name


def restated_defaults(root: Path = SRC) -> List[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in OWNERS:
            continue
        for line, name in sorted(literal_defaults(ast.parse(path.read_text()))):
            found.append(f"{rel}:{line}: {name}")
    return found


def test_no_literal_default_outside_its_owner():
    assert restated_defaults() == []


def test_the_check_catches_a_restated_eps(tmp_path):
    pkg = tmp_path / "robustedge" / "x"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text(
        "def f(eps=0.1, steps=0):\n    return g(restarts=5, eps=eps)\n"
        "class C:\n    square_queries: int = setting(1000, help='')\n"
    )
    assert restated_defaults(tmp_path / "robustedge") == [
        "x/a.py:1: eps",
        "x/a.py:2: restarts",
        "x/a.py:4: square_queries",
    ]


def default_constants(root: Path = SRC) -> Dict[str, List[str]]:
    """Module-level ``DEFAULT_*`` / ``BENCH_*`` constants and the modules defining them."""
    seen: Dict[str, List[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            targets = []
            if isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                targets = [node.target.id]
            for name in targets:
                if name.startswith(("DEFAULT_", "BENCH_")):
                    seen.setdefault(name, []).append(path.relative_to(root).as_posix())
    return seen


def test_every_default_constant_is_defined_once():
    twice = {k: v for k, v in default_constants().items() if len(v) > 1}
    assert twice == {}


def _commands(group: click.Group, prefix: str = "") -> Iterator[Tuple[str, click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def _all_config_fields() -> Dict[str, Tuple[type, dataclasses.Field]]:
    """Every config field offered anywhere, by field name (first config wins)."""
    from robustedge.cli import cli
    from robustedge.commands.options import ConfigOption

    out: Dict[str, Tuple[type, dataclasses.Field]] = {}
    for _, cmd in _commands(cli):
        for p in cmd.params:
            if isinstance(p, ConfigOption):
                out.setdefault(p.config_field.name, (None, p.config_field))
    return out


def test_config_options_take_the_field_default():
    """A generated option's default is its config field's default (no override restates it)."""
    from robustedge.cli import cli
    from robustedge.commands.options import ConfigOption

    checked = 0
    for path, cmd in _commands(cli):
        for p in cmd.params:
            if not isinstance(p, ConfigOption):
                continue
            f = p.config_field
            want = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            want = getattr(want, "value", want)
            got = p.default if not p.multiple else tuple(p.default or ())
            if isinstance(want, (list, tuple)) or (p.multiple and want in ({}, ())):
                want = tuple(want) if not isinstance(want, dict) else ()
            assert got == want, f"robustedge {path} --{f.name}: {got!r} != {want!r}"
            checked += 1
    assert checked > 0


def test_no_hand_written_option_restates_a_config_field():
    """An option that is not generated may not carry the name of a config field (it would be
    a second default and a second help text for the same setting)."""
    from robustedge.cli import cli
    from robustedge.commands.options import ConfigOption

    fields = _all_config_fields()
    restated = []
    for path, cmd in _commands(cli):
        for p in cmd.params:
            if isinstance(p, click.Option) and not isinstance(p, ConfigOption):
                if p.name in fields:
                    restated.append(f"robustedge {path} {p.opts[0]}")
    assert restated == []


@pytest.mark.parametrize("name", ["eps", "steps"])
def test_watched_names_include_the_issue_examples(name):
    assert name in WATCHED
