"""Docs: CLI pages in sync with --help, README structure, links and commands that exist."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def gen():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts/gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_pages_match_help():
    """In a fresh interpreter: the pages show the shipped registries, not names other tests
    registered in this process (a toy data set, a user's arrays)."""
    script = str(ROOT / "scripts" / "gen_cli_docs.py")
    r = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert r.returncode == 0, f"docs/cli out of date: {r.stdout}{r.stderr[-2000:]}"


def test_every_command_has_a_page():
    from robustedge.cli import cli

    for name in cli.commands:
        assert (ROOT / "docs" / "cli" / f"{name}.md").is_file(), name


def test_stale_page_is_detected(tmp_path):
    g = gen()
    for name, text in g.pages().items():
        (tmp_path / name).write_text(text)
    assert g.stale(tmp_path) == []
    (tmp_path / "run.md").write_text("old text")
    (tmp_path / "gone.md").write_text("a removed command")
    assert g.stale(tmp_path) == ["gone.md", "run.md"]


def test_readme_opens_with_what_and_the_two_commands():
    head = README.split("\n## ", 2)
    assert head[0].startswith("# robustedge\n")
    assert len([ln for ln in head[0].splitlines()[1:] if ln.strip()]) == 3  # three lines
    quick = head[1]
    assert quick.startswith("Quick start")
    code = quick.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [ln.split()[:2] for ln in code] == [["make", "demo"], ["make", "test"]]


def test_readme_sections_in_order():
    titles = re.findall(r"^## (.+)$", README, re.M)
    order = ["Quick start", "A 5-minute tour", "Your own model and data"]
    assert titles[:5] == [*order, "Deploy to a Raspberry Pi", "CI under QEMU"]
    assert "Where the numbers are" in titles
    measured = README.split("## Where the numbers are", 1)[1]
    assert "<!-- results:headline -->" in measured


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target
    for path in re.findall(r"`((?:recipes|docker|scripts|requirements)/[\w./-]+)`", README):
        assert (ROOT / path).exists(), path


def test_readme_commands_exist():
    from robustedge.cli import cli

    code = "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S))
    used = set(re.findall(r"(?:^|/|\s)robustedge ([a-z][\w-]*)", code, re.M))
    assert {"run", "report", "bench", "compress", "export"} <= used
    assert used <= set(cli.commands), used - set(cli.commands)


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_readme_or_recipe_mentions_recipe(path):
    assert path.name in README or path.stem.upper() in README.upper()
