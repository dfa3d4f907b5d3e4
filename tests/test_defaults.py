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


# Literals that mean "off" or "none" rather than a chosen default.
NEUTRAL = {"restarts": (0, 1), "square_restarts": (0, 1)}


def _literal_number(node: ast.AST, name: str) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
        and node.value not in NEUTRAL.get(name, (0,))
    )


def _is_setting(node: ast.AST) -> bool:
    f = node.func if isinstance(node, ast.Call) else None
    return (
        isinstance(f, ast.Name)
        and f.id == "setting"
        or (isinstance(f, ast.Attribute) and f.attr == "setting")
    )


def literal_defaults(tree: ast.AST) -> Iterator[Tuple[int, str, bool]]:
    """(line, name, is a config setting) of every watched name given a numeric literal (not an
    'off' value): as a parameter default, a keyword argument, a dataclass field default, or a
    config ``setting(...)`` default (which is where a default is meant to be written)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults) :], a.defaults))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, default in pairs:
                if arg.arg in WATCHED and _literal_number(default, arg.arg):
                    yield default.lineno, arg.arg, False
        elif isinstance(node, ast.Call) and not _is_setting(node):
            for kw in node.keywords:
                if kw.arg in WATCHED and _literal_number(kw.value, kw.arg):
                    yield kw.value.lineno, kw.arg, False
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, value = node.target.id, node.value
            if name not in WATCHED or value is None:
                continue
            setting = _is_setting(value)
            if setting:
                value = value.args[0] if value.args else None
            if value is not None and _literal_number(value, name):
                yield value.lineno, name, setting


def restated_defaults(root: Path = SRC) -> List[str]:
    """Literal defaults written outside a config setting (outside the owners), and watched
    names whose setting is written with a literal in more than one config."""
    found, settings = [], {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in OWNERS:
            continue
        for line, name, setting in sorted(literal_defaults(ast.parse(path.read_text()))):
            if setting:
                settings.setdefault(name, []).append(f"{rel}:{line}")
            else:
                found.append(f"{rel}:{line}: {name}")
    for name, where in sorted(settings.items()):
        if len(where) > 1:
            found.append(f"{name} set by a literal in {len(where)} configs: {', '.join(where)}")
    return found


def test_no_literal_default_outside_its_owner():
    assert restated_defaults() == []


def test_the_check_catches_a_restated_eps(tmp_path):
    pkg = tmp_path / "robustedge" / "x"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text(
        "def f(eps=0.1, steps=0, restarts=1):\n    return g(restarts=5, eps=eps)\n"
        "class C:\n    square_queries: int = setting(1000, help='')\n"
    )
    (pkg / "b.py").write_text("class D:\n    square_queries: int = setting(500, help='')\n")
    assert restated_defaults(tmp_path / "robustedge") == [
        "x/a.py:1: eps",
        "x/a.py:2: restarts",
        "square_queries set by a literal in 2 configs: x/a.py:4, x/b.py:2",
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
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                continue  # a required field (--teacher): no default to compare
            want = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            want = getattr(want, "value", want)
            got = p.default if not p.multiple else tuple(p.default or ())
            if isinstance(got, str) and not p.multiple:  # a text form ('all'), as parsed
                got = p.type.convert(got, p, None)
            if isinstance(got, str) and isinstance(want, tuple):  # a comma list (--formats)
                got = tuple(got.split(","))
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
                if p.name in fields and (path, p.opts[0]) not in NOT_RESTATED:
                    restated.append(f"robustedge {path} {p.opts[0]}")
    assert restated == []


# Hand-written options that share a name with some config's field but mean something else.
NOT_RESTATED = {
    ("eval", "--steps"): "a shortcut that sets EvalPlan.pgd_steps and square_queries at once",
    ("eval", "--seed"): "the seed of the evaluation's attacks (eval_run's), not a training seed",
    ("run", "--device"): "moves every training stage of a recipe to one device",
}


@pytest.mark.parametrize("name", ["eps", "steps"])
def test_watched_names_include_the_issue_examples(name):
    assert name in WATCHED
