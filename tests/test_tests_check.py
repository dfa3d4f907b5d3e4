"""The tests themselves: every test function must be able to fail.

A test passes the check when its body contains an ``assert``, a ``pytest.raises`` /
``pytest.warns`` block, a ``pytest.fail`` / ``pytest.skip`` call, an ``assert_*`` call
(``np.testing``, ``torch.testing``), or a call to a function of the tests folder that does
(directly or through another one). Helper names are matched across the folder, so a helper
sharing its name with a checking one elsewhere passes too (a known leniency).
Tests that only run code and check nothing are refused: a reviewer who plants a bug there
sees no failure.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

TESTS = Path(__file__).resolve().parent

CHECK_CALLS = {"raises", "warns", "fail", "skip", "importorskip", "deprecated_call"}


def _calls(node: ast.AST) -> Set[str]:
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Name):
                out.add(f.id)
            elif isinstance(f, ast.Attribute):
                out.add(f.attr)
    return out


def _asserts(node: ast.AST) -> bool:
    """An ``assert`` statement, a pytest check call, or ``np.testing.assert_*`` /
    ``torch.testing.assert_close`` / ``self.assertEqual``-style calls."""
    if any(isinstance(n, ast.Assert) for n in ast.walk(node)):
        return True
    calls = _calls(node)
    return bool(calls & CHECK_CALLS) or any(c.startswith("assert") for c in calls)


def checking_functions(trees: Dict[str, ast.Module]) -> Set[str]:
    """Names of functions (any local module) that check something, directly or through
    another checking function (fixed point)."""
    funcs = {}
    for tree in trees.values():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.setdefault(n.name, []).append(n)
    good = {name for name, defs in funcs.items() if any(_asserts(d) for d in defs)}
    while True:
        more = {
            name
            for name, defs in funcs.items()
            if name not in good and any(_calls(d) & good for d in defs)
        }
        if not more:
            return good
        good |= more


def test_every_test_function_can_fail():
    trees = {p.name: ast.parse(p.read_text(), str(p)) for p in sorted(TESTS.glob("*.py"))}
    # helpers from benchmarks/ that tests import (e.g. crash.run_and_kill) do not count
    good = checking_functions(trees)
    bad = []
    for name, tree in trees.items():
        if not name.startswith("test_"):
            continue
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith(
                "test_"
            ):
                if not (_asserts(n) or (_calls(n) & good)):
                    bad.append(f"{name}::{n.name}")
    assert not bad, "test functions that check nothing (no assert, no pytest.raises): " + (
        ", ".join(bad)
    )


def test_the_check_refuses_a_test_without_an_assert():
    src = """
def helper(x):
    return x + 1

def check_it(x):
    assert x

def test_checks_through_helper():
    check_it(helper(1))

def test_runs_only():
    helper(2)
"""
    tree = ast.parse(src)
    good = checking_functions({"m": tree})
    assert "check_it" in good and "helper" not in good
    assert "test_checks_through_helper" in good and "test_runs_only" not in good
