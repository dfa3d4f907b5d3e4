"""docs/api.md's reference is generated from the API's docstrings and kept in sync; every
public API function is typed and documented; the guide names files that exist."""

from __future__ import annotations

import importlib.util
import inspect
import re
import typing
from pathlib import Path

from robustedge import api

ROOT = Path(__file__).resolve().parents[1]


def gen():
    spec = importlib.util.spec_from_file_location("gen_api_docs", ROOT / "scripts/gen_api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_matches_the_docstrings():
    assert not gen().stale(), "docs/api.md out of date; run scripts/gen_api_docs.py"


def test_a_changed_docstring_makes_the_page_stale(tmp_path, monkeypatch):
    g = gen()
    page = tmp_path / "api.md"
    page.write_text("guide\n" + g.reference())
    monkeypatch.setattr(g, "DOC", page)
    assert not g.stale()
    monkeypatch.setattr(api.train, "__doc__", "Something else.")
    assert g.stale()


def test_every_public_function_is_typed_and_documented():
    for name in api.__all__:
        obj = getattr(api, name)
        assert obj.__doc__ and obj.__doc__.strip(), name
        if inspect.isfunction(obj):
            hints = typing.get_type_hints(obj)
            params = [p for p in inspect.signature(obj).parameters if p != "settings"]
            assert "return" in hints and set(params) <= set(hints), name


def test_files_named_in_the_guide_exist():
    text = (ROOT / "docs" / "api.md").read_text()
    for rel in set(re.findall(r"`((?:examples|tests|scripts)/[\w./]+\.py)", text)):
        assert (ROOT / rel).is_file(), rel
    for script in (ROOT / "examples").glob("*.py"):
        assert f"`{script.name}`" in text, f"{script.name} is not described in docs/api.md"
