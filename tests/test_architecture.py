"""The layers of docs/architecture.md hold: import-linter's contracts (pyproject.toml) are
kept, and no module imports a private name from another package."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "robustedge"


def _package_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = rel.parts if rel.name != "__init__" else rel.parts[:-1]
    return ".".join(parts[:2]) if len(parts) > 2 else ".".join(parts[:1])


def private_imports(root: Path = SRC):
    """(file, line, module, name) for every ``from robustedge.X import _name`` whose module
    lies outside the importing file's own package."""
    found = []
    for path in sorted(root.rglob("*.py")):
        own = _package_of(path, root)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                "robustedge"
            ):
                continue
            target = ".".join(node.module.split(".")[:2])
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and target != own:
                    found.append((path.name, node.lineno, node.module, alias.name))
    return found


def test_no_private_names_cross_packages():
    assert private_imports() == []


def test_private_import_check_catches_one(tmp_path):
    pkg = tmp_path / "robustedge" / "compress"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("from robustedge.training.run import _check_out_dir\n")
    (pkg / "y.py").write_text("from robustedge.compress.common import _helper\n")
    assert private_imports(tmp_path / "robustedge") == [
        ("x.py", 1, "robustedge.training.run", "_check_out_dir")
    ]


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                    reason="import-linter not installed (requirements/dev.txt)")  # fmt: skip
def test_import_contracts_kept():
    exe = Path(sys.executable).parent / "lint-imports"
    r = subprocess.run([str(exe)], capture_output=True, text=True, cwd=SRC.parents[1])
    assert r.returncode == 0, r.stdout[r.stdout.find("Broken contracts") :][:3000]
    assert "0 broken" in r.stdout


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy not installed (requirements/dev.txt)")  # fmt: skip
def test_public_api_is_strictly_typed():
    """``mypy --strict`` on robustedge.api (a test, so that it runs beside the others under
    ``pytest -n 2`` instead of before them; no cache: mypy 1.18 cannot serialize some torch
    types)."""
    cmd = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
           "--ignore-missing-imports", "--cache-dir=/dev/null", "src/robustedge/api"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=SRC.parents[1])
    assert r.returncode == 0, r.stdout[-3000:]
    assert r.stdout.startswith("Success: no issues found")


def test_untrusted_json_nesting_is_refused_without_recursing():
    """A hostile ``[[[[...`` must be refused by counting, not by json's C recursion (which
    overflows the C stack, killing the process, once a library raises the recursion limit)."""
    import sys

    from robustedge import jsonsafe

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000_000)  # what made json.loads segfault in the full suite
    try:
        with pytest.raises(jsonsafe.TooDeep, match="nested 300000 levels"):
            jsonsafe.loads("[" * 300_000)
    finally:
        sys.setrecursionlimit(old)
    assert jsonsafe.loads('{"a": ["[[[[", {"b": 1}]}') == {"a": ["[[[[", {"b": 1}]}
    assert jsonsafe.loads(b'{"a": [1]}') == {"a": [1]}  # what ssh hands back
    with pytest.raises(jsonsafe.TooDeep):
        jsonsafe.loads(b"[" * 1000)
    assert jsonsafe.nesting_depth('{"a": "\\"}') == 1
    assert jsonsafe.nesting_depth("[" * 64 + "]" * 64) == 64
    jsonsafe.loads("[" * 64 + "]" * 64)
    with pytest.raises(ValueError):
        jsonsafe.loads("[" * 65 + "]" * 65)
