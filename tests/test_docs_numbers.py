"""Measured figures in the docs live only inside generated blocks.

(a) every ``<!-- generated: NAME -->`` block equals what scripts/gen_results.py renders now from
benchmarks/measured/*.json; (b) outside those blocks, README.md and docs/*.md carry no
measured-looking number (a decimal, a percentage, a duration, a byte size, "N points", "Nx"),
except the few kinds of non-measurements the ALLOW patterns name.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A measured-looking figure: a decimal, a percentage, a duration, a size, points, a ratio.
FIGURE = re.compile(
    r"(?<![\w./])(?:"
    r"\d[\d,.]*\s?%"  # a percentage: 95 %, 76.6%
    r"|\d[\d,.]*(?:-\d[\d,.]*)?\s?(?:min|minutes?|h|hours?|s|secs?|seconds?|ms|us|µs)\b"  # 3-8 s
    r"|\d[\d,.]*(?:-\d[\d,.]*)?\s?(?:[KMG]i?B|B|bytes|k)\b"  # a size: 13,752 B, 4 MB, 10.7 k
    r"|\d[\d,.]*\s?(?:points?|pts?)\b"  # accuracy differences
    r"|\d[\d,.]*x(?!\d)\b"  # ratios: 1.73x
    r"|\d[\d,]*\.\d+(?![\d.])"  # any other decimal: 0.517, 42.18
    r")"
)

# Not measurements; each pattern is blanked before FIGURE is searched. Keep this list short.
ALLOW = [
    # code spans: commands, option values, expressions (`clean>=0.97`), file names
    r"`[^`]*`",
    # versions and addresses: Python 3.11, ==1.26.4, qemu 7.2, 127.0.0.1
    r"\b(?:Python|qemu-system|torchattacks|vela|ethos-u-vela|tflite-runtime) (?:>= )?[\d.]+",
    r"\d+\.\d+\.\d+(?:\.\d+)?",
    # the attack budget, a setting: eps 0.1, eps = 0.2, 8/255
    r"\beps(?: =)? [\d.]+(?:/\d+)?",
    # sparsity and compression settings named by their value: "90 % sparse", "the 95 % student",
    # "90 / 95 / 99 % sparsity", "4x-fewer-MACs", "2x / 4x"
    r"(?:\d+ / )*\d+(?:\.\d+)? ?%(?:[- ]sparse| sparsit(?:y|ies)| student| of the weights)",
    # ("at 95 %": whole percentages only; a measured accuracy is written with its decimal)
    r"\b(?i:at|sparsity|sparsities) (?:\d+ (?:/|and|or|,) )*\d+ ?%(?: ?(?:/|and|or|,) \d+ ?%?)*",
    r"\d+x(?: / \d+x)?[- ]fewer[- ]MACs",
    # defaults written in code, quoted with their setting: "(default 0.01 = 1 point)"
    r"\bdefault \d[\d.]*(?: ?%)?(?: = \d+ points?)?",
    # hardware limits of a device class (the MCU budgets the docs target, not measured)
    r"\d+ ?KB (?:of )?(?:SRAM|flash)|\d+ ?KB - \d+ ?MB of flash",
    # limits the code enforces (security.md, boards.md): refused above N GiB
    r"(?:more than|above|at most) \d+ ?GiB",
]
ALLOW_RE = re.compile("|".join(f"(?:{p})" for p in ALLOW))


def _load_gen():
    spec = importlib.util.spec_from_file_location("gen_results", ROOT / "scripts/gen_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gen():
    return _load_gen()


def pages():
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import docs_blocks

    return docs_blocks, [ROOT / "README.md", *docs_blocks.pages(ROOT)]


def typed_figures(text: str) -> list:
    """(line number, figure, line) of every measured-looking figure outside generated blocks
    and code blocks (commands, settings, recorded program output: quote measured output from
    a generated block), after ALLOW."""
    found, fenced, inside, indented, prev = [], False, False, False, ""
    lines = text.splitlines()
    for n, line in enumerate(lines):  # fenced code out first: it may hold unpaired backticks
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            lines[n] = ""
    fenced = False
    # code spans may wrap over lines: blank them in the whole text, keeping the line breaks
    text = re.sub(r"`[^`]*`", lambda m: re.sub(r"[^\n]", " ", m.group()), "\n".join(lines))
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        # an indented code block (4 spaces after a blank line) is code, like a fenced one
        indented = line.startswith("    ") and (indented or not prev.strip())
        prev = line
        if indented:
            continue
        if line.startswith("<!-- generated:") or line.startswith("<!-- results:headline"):
            inside = True
        if line.startswith("<!-- end generated") or line.startswith("<!-- /results:headline"):
            inside = False
            continue
        if fenced or inside:
            continue
        for m in FIGURE.finditer(ALLOW_RE.sub(" ", line)):
            found.append((n, m.group(0), line.strip()))
    return found


def test_generated_blocks_equal_what_the_script_renders(gen):
    docs_blocks, _ = pages()
    prov = gen.json.loads(gen.PROVENANCE.read_text())
    for path, want in gen.doc_pages(prov).items():
        have = dict(docs_blocks.blocks(path.read_text()))
        for name, body in docs_blocks.blocks(want):
            assert have.get(name) == body, (
                f"{path.name}: block '{name}' out of date; run scripts/gen_results.py"
            )


@pytest.mark.parametrize("path", pages()[1], ids=lambda p: p.name)
def test_no_typed_figures_outside_generated_blocks(path):
    found = typed_figures(path.read_text())
    assert not found, (
        "measured-looking figures typed by hand (put them in a generated block):\n"
        + ("\n".join(f"{path.name}:{n}: {fig!r} in: {line}" for n, fig, line in found))
    )


def test_a_typed_figure_is_caught():
    text = "Intro.\n\nThe student reached 78.7 % and ran 12 min.\n\n```bash\nx --eps 0.1\n```\n"
    assert [f for _, f, _ in typed_figures(text)] == ["78.7 %", "12 min"]
    for typed in [
        "42.18s",
        "13,752 B",
        "+2.6 points",
        "1.73x faster",
        "0.517778",
        "4 MB",
        "20-40 s",
    ]:
        assert typed_figures(f"It gave {typed} here."), typed
    # ... but not settings, versions, or figures inside a generated block
    fine = "Python 3.11, eps 0.1, the 95 % student, `--sparsity 0.9`, numpy 1.26.4, 127.0.0.1."
    assert typed_figures(fine) == []
    block = "<!-- generated: measured x.json -->\n| 78.7 | 12 min |\n<!-- end generated -->\n"
    assert typed_figures(block) == []


def test_a_stale_block_is_caught(gen, tmp_path, monkeypatch):
    docs_blocks, _ = pages()
    page = "Before.\n<!-- generated: ci_smoke -->\nold figures\n<!-- end generated -->\nAfter.\n"
    filled = docs_blocks.fill(page, gen.MEASURED, lambda n, t: [])
    assert filled != page and filled.startswith("Before.\n") and filled.endswith("After.\n")
    assert docs_blocks.fill(filled, gen.MEASURED, lambda n, t: []) == filled
    with pytest.raises(SystemExit, match="no such renderer"):
        docs_blocks.fill(page.replace("ci_smoke", "nope"), gen.MEASURED, lambda n, t: [])


def test_renderers_by_hand(tmp_path):
    """The test-suite and MCU blocks from small files whose figures are worked out by hand."""
    docs_blocks, _ = pages()
    suite = {"benchmark": "test_suite", "date": "d", "commit": "c", "hardware": "h",
             "wall_s": 612.3, "cpu_s": 59.4, "passed": 9, "failed": 1, "skipped": 2,
             "workers": 2, "load_before": [3.5], "load_after": [4.0],
             "slowest": [{"test": "t.py::a", "phase": "call", "seconds": 42.184}]}  # fmt: skip
    (tmp_path / "test_suite.json").write_text(json.dumps(suite))
    text = "\n".join(docs_blocks.test_suite(tmp_path))
    assert "| wall time | 10 min 12 s |" in text and "| CPU time (every process) | 59.4 s |" in text
    assert "| 9 / 1 / 2 |" in text and "| 3.5 / 4.0 |" in text
    assert "on 2 cores | missed |" in text  # 612.3 s > 7 min
    assert "| 1 | 42.18 s | call | `t.py::a` |" in text
    rows = [{"model": "t", "kind": "teacher", "arena_bytes": 4096, "tflm_flash_bytes": 8192,
             "tflm_worst_case": 0.80},
            {"model": "s", "kind": "student", "arena_bytes": 2048, "tflm_flash_bytes": 2049,
             "tflm_worst_case": 0.77}]  # fmt: skip
    (tmp_path / "mcu.json").write_text(json.dumps({"rows": rows}))
    text = "\n".join(docs_blocks.mcu_rows(tmp_path))
    # arena 2048 <= 4096 / 2: met; flash 2049 > 8192 / 4: missed; 0.77 >= 0.80 - 0.03: met
    assert "| s | met | missed | met |" in text and "Students meeting all three: none." in text
    assert "| s | 2.0 | 50.0 |" in text  # 2048 B = 2.0 KiB, half the teacher's arena
