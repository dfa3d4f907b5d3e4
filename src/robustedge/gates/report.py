"""A check's result for CI systems: JUnit XML (one test case per model x target x gate, the
failure carrying its one-line message) and a Markdown summary (GitHub's job summary, GitLab's
merge-request note). Built from :class:`~robustedge.gates.result.CheckResult` only."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import List

from robustedge.gates.result import CheckResult, Outcome

SUITE = "robustedge check"


def case_name(o: Outcome) -> str:
    """``qemu-aarch64 [tflite-int8]: robust>=0.75``: a test case's name inside its model."""
    fmt = f" [{o.format}]" if o.format else ""
    return f"{o.target}{fmt}: {o.gate}"


def junit_xml(result: CheckResult) -> str:
    """JUnit XML: one ``testsuite``; per outcome a ``testcase`` (classname: the model), with a
    ``failure`` element (message: the one-line reason) when the gate failed."""
    suite = ET.Element(
        "testsuite",
        name=SUITE,
        tests=str(len(result.outcomes)),
        failures=str(len(result.failures)),
        errors="0",
        skipped="0",
    )
    for o in result.outcomes:
        case = ET.SubElement(suite, "testcase", classname=o.model, name=case_name(o))
        if not o.passed:
            fail = ET.SubElement(case, "failure", message=o.line, type=o.kind)
            fail.text = o.line
        else:
            out = ET.SubElement(case, "system-out")
            out.text = o.line
    for note in result.notes:
        prop = ET.SubElement(suite, "system-err")
        prop.text = note
    root = ET.Element(
        "testsuites", name=SUITE, tests=suite.get("tests"), failures=suite.get("failures")
    )
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result: CheckResult, title: str = "robustedge check") -> str:
    """A Markdown summary: the verdict, then a table of every gate (failures first)."""
    n, bad = len(result.outcomes), len(result.failures)
    verdict = "all gates hold" if result.passed else f"**{bad} of {n} gates failed**"
    lines: List[str] = [f"### {title}: {verdict}", ""]
    lines += [
        "| | model | target | gate | measured | needs | what |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in sorted(result.outcomes, key=lambda o: o.passed):
        got = "not measured" if o.measured is None else _value(o.measured)
        what = "; ".join(x for x in (o.label, o.detail) if x)
        target = o.target + (f" [{o.format}]" if o.format else "")
        lines.append(
            f"| {'pass' if o.passed else 'FAIL'} | {_cell(o.model)} | {_cell(target)} | "
            f"{_cell(o.gate)} | {_cell(got)} | {_cell(o.threshold)} | {_cell(what)} |"
        )
    if result.notes:
        lines += [""] + [f"- {_cell(n)}" for n in result.notes]
    return "\n".join(lines) + "\n"


def _value(v: object) -> str:
    return v if isinstance(v, str) else f"{float(v):.4g}"  # type: ignore[arg-type]
