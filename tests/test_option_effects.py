"""Every CLI option and every recipe key names the test that checks its effect.

``tests/option_effects.py`` maps each option (``"train --weight-decay"``, from click, every
command) and each recipe key (``"TrainConfig.weight_decay"``, from the recipe schema and the
stage configs it accepts) to test node ids (``"test_file.py::test_name"``). This check fails
when an option or key has no entry (and is not in :data:`option_effects.NOT_YET`, the explicit,
shrinking list of those still without one), when an entry names a test that does not exist,
or when the named test's own source (its body and decorators) does not both

- set the option: its flag as a string (``"--weight-decay"``) or its config field as a keyword
  argument (``weight_decay=``), a dict key (``"weight_decay": ...``) or a recipe line
  (``weight_decay: ...`` inside a string), and
- check something other than the exit status: an ``assert`` that still reads a name once
  ``X.returncode`` / ``X.exit_code`` are taken out of it, an ``assert_*`` call
  (``np.testing``, ``torch.testing``) or a call to a ``check_*`` / ``expect_*`` helper.

An entry at the config level (the test builds the stage config and checks the field or what
it drives) counts: the CLI builds the same config (``config_from_options``). Run this file
with ``python tests/test_option_effects.py`` to list candidate tests for entries not yet made.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import click

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from option_effects import EFFECTS, NOT_YET  # noqa: E402

EXIT_ATTRS = {"returncode", "exit_code"}


def cli_options() -> Dict[str, Tuple[List[str], str]]:
    """``{"command path --flag": (flags, config field name)}`` for every click option."""
    from robustedge.cli import cli

    out: Dict[str, Tuple[List[str], str]] = {}

    def walk(cmd: click.Command, path: Tuple[str, ...]) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                walk(sub, path + (name,))
            return
        for p in cmd.params:
            flags = [o for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
            if isinstance(p, click.Option) and flags and flags != ["--help"]:
                out[f"{' '.join(path)} {flags[0]}"] = (flags, p.name or "")

    walk(cli, ())
    return out


def recipe_keys() -> Dict[str, str]:
    """``{"Section.field": field}`` for every recipe section and stage config field."""
    from robustedge.compress.config import CompressConfig
    from robustedge.export.config import ExportConfig
    from robustedge.recipe import schema
    from robustedge.training.config import TrainConfig
    from robustedge.training.evaluate import EvalPlan

    sections = [
        schema.Recipe, schema.DataSpec, schema.TeacherSpec, schema.CompressSpec,
        schema.BudgetSpec, schema.TargetSpec, schema.DeviceSpec, TrainConfig, EvalPlan,
        ExportConfig, CompressConfig,
    ]  # fmt: skip
    return {f"{c.__name__}.{f.name}": f.name for c in sections for f in dataclasses.fields(c)}


@functools.cache
def _tree(name: str) -> Optional[ast.Module]:
    path = TESTS / name
    return ast.parse(path.read_text()) if path.is_file() else None


def find_test(node_id: str) -> Optional[ast.FunctionDef]:
    """The function ``file.py::name`` or ``file.py::Class::name`` (None: not there)."""
    file, *names = node_id.split("::")
    tree = _tree(file)
    scope = tree.body if tree else []
    for i, name in enumerate(names):
        kinds = (ast.FunctionDef,) if i == len(names) - 1 else (ast.ClassDef,)
        hit = [n for n in scope if isinstance(n, kinds) and n.name == name]
        if not hit:
            return None
        scope = hit[0].body if i < len(names) - 1 else []
        last = hit[0]
    return last if names and last.name.startswith("test") else None


def _strings(fn: ast.AST) -> Iterator[str]:
    """The function's string constants, docstrings left out (naming a flag is not setting it)."""
    docs = {
        id(n.body[0].value)
        for n in ast.walk(fn)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
    }
    for n in ast.walk(fn):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            yield n.value


def sets_option(fn: ast.AST, flags: List[str], field: str) -> bool:
    """The function passes one of ``flags`` or sets the config ``field``."""
    for s in _strings(fn):
        if any(re.search(rf"(^|[\s\"'=]){re.escape(f)}($|[\s=])", s) for f in flags):
            return True
        if field and (s == field or re.search(rf"(^|[\s{{,]){re.escape(field)}\s*:", s)):
            return True
    return bool(field) and any(isinstance(n, ast.keyword) and n.arg == field for n in ast.walk(fn))


def _beyond_exit(test: ast.AST) -> bool:
    """The expression reads a name outside its ``X.returncode`` / ``X.exit_code`` parts."""
    todo = [test]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Attribute) and n.attr in EXIT_ATTRS:
            continue
        if isinstance(n, ast.Name):
            return True
        todo.extend(ast.iter_child_nodes(n))
    return False


def checks_effect(fn: ast.AST) -> bool:
    """An assert on more than the exit status, an ``assert_*`` call, or a check helper."""
    for n in ast.walk(fn):
        if isinstance(n, ast.Assert) and _beyond_exit(n.test):
            return True
        if isinstance(n, ast.Call):
            f = n.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
            if name.startswith(("assert_", "check_", "expect_")):
                return True
    return False


def problems() -> List[str]:
    """Every missing entry, missing test, or test that does not set and check its option."""
    keys = {k: v for k, v in cli_options().items()}
    keys.update({k: ([], f) for k, f in recipe_keys().items()})
    out = [f"{k}: no entry in tests/option_effects.py" for k in keys if k not in EFFECTS]
    out = [p for p in out if p.split(":")[0] not in NOT_YET]
    out += [f"{k}: listed but not an option or recipe key" for k in EFFECTS if k not in keys]
    out += [f"{k}: in NOT_YET but has an entry" for k in NOT_YET if k in EFFECTS]
    out += [f"{k}: in NOT_YET but not an option or recipe key" for k in NOT_YET if k not in keys]
    for key, ids in EFFECTS.items():
        if key not in keys:
            continue
        flags, field = keys[key]
        for node_id in [ids] if isinstance(ids, str) else ids:
            fn = find_test(node_id)
            if fn is None:
                out.append(f"{key}: {node_id} is not a test function")
            elif not sets_option(fn, flags, field):
                out.append(f"{key}: {node_id} does not set {flags[:1] or [field]}")
            elif not checks_effect(fn):
                out.append(f"{key}: {node_id} asserts nothing beyond the exit status")
    return out


def test_every_option_and_recipe_key_names_a_test_that_checks_its_effect():
    assert len(cli_options()) > 100 and len(recipe_keys()) > 50  # the walks found them
    found = problems()
    assert not found, f"{len(found)} option effect problems:\n" + "\n".join(found)


def _fn(src: str) -> ast.FunctionDef:
    return ast.parse(src).body[0]


def test_the_check_refuses_exit_status_only_and_unset_options():
    only_exit = _fn(
        "def test_a(cli):\n r = cli('train', '--weight-decay', '0.5')\n assert r.returncode == 0"
    )
    assert sets_option(only_exit, ["--weight-decay"], "weight_decay")
    assert not checks_effect(only_exit)
    assert not checks_effect(_fn("def test_b(r):\n assert r.exit_code != 0, r.output"))
    assert checks_effect(_fn("def test_c(r, cfg):\n assert r.returncode == 0 and cfg.x == 1"))
    assert checks_effect(_fn("def test_d(a, b):\n np.testing.assert_allclose(a, b)"))
    unset = _fn("def test_e(cfg):\n assert cfg.weight_decay == 0.5")
    assert not sets_option(unset, ["--weight-decay"], "weight_decay")
    assert not sets_option(_fn("def test_f():\n x('--weight-decays')"), ["--weight-decay"], "")
    assert sets_option(_fn("def test_g():\n T(weight_decay=1)"), [], "weight_decay")
    assert sets_option(_fn("def test_h():\n t = 'train: {weight_decay: 1}'"), [], "weight_decay")
    assert find_test("test_option_effects.py::test_nope") is None
    assert find_test("test_option_effects.py::_fn") is None
    assert find_test("no_such_file.py::test_x") is None


def suggest() -> Dict[str, List[str]]:
    """Candidate tests (they set the option and check beyond the exit status) for each option
    or key without an entry: a maintainer reads them and writes the right one into the map."""
    keys = {k: v for k, v in cli_options().items()}
    keys.update({k: ([], f) for k, f in recipe_keys().items()})
    funcs = []
    for path in sorted(TESTS.glob("test_*.py")):
        for n in _tree(path.name).body:
            if isinstance(n, ast.FunctionDef) and n.name.startswith("test"):
                funcs.append((f"{path.name}::{n.name}", n))
    out = {}
    for key, (flags, field) in keys.items():
        if key not in EFFECTS:
            out[key] = [i for i, fn in funcs if sets_option(fn, flags, field) and checks_effect(fn)]
    return out


if __name__ == "__main__":
    for k, ids in suggest().items():
        print(f"{k!r}: {ids[:4]!r},")
