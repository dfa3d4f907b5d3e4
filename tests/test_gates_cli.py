"""`robustedge check` as a CI job runs it (exit 0 / 1 / 2, one line per failure, JUnit and
the job summary), and the recipe's ``gates:`` section (validated with file:line)."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from robustedge.errors import RobustEdgeError
from robustedge.recipe.schema import parse_recipe
from test_gates import results, write


def test_exit_codes_lines_and_outputs(tmp_path, monkeypatch):
    a = write(tmp_path, "results.json", results(run="s1", robust=0.70))
    ok = run_cli("check", str(a), "--expect", "clean>=0.9", "--expect", "robust>=0.6")
    assert ok.returncode == 0 and "2 of 2 gates hold: ok" in ok.stdout
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    bad = run_cli(
        "check",
        str(a),
        "--expect",
        "robust>=0.75",
        "--junit",
        str(tmp_path / "j.xml"),
        "--json",
        str(tmp_path / "c.json"),
    )
    assert bad.returncode == 1
    (line,) = [x for x in bad.stdout.splitlines() if x.startswith("FAIL")]
    assert line.startswith("FAIL s1 @ qemu-aarch64 [tflite-int8]: robust = 0.7, needs >= 0.75")
    assert "**1 of 1 gates failed**" in summary.read_text()
    assert json.loads((tmp_path / "c.json").read_text())["counts"] == {"gates": 1, "failed": 1}
    assert "<failure" in (tmp_path / "j.xml").read_text()
    for args, says in (
        (["--expect", "robustness>=0.7"], "unknown metric 'robustness'"),
        (["--expect", "robust>0.7%%"], "is not a number"),
        (["--expect", "p50_ms<=2"], "absolute latency on an emulated target"),
    ):
        r = run_cli("check", str(a), *args)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr
    r = run_cli("check", str(tmp_path / "missing.json"), "--expect", "clean>=0.9")
    assert r.returncode == 2 and "no such results file or folder" in r.stderr


RECIPE = """\
name: r
data: {name: digits}
teacher: {train: {model: tiny, epochs: 1}}
compress:
  - {name: prox, method: prox, sparsity: [0.5]}
export: {formats: [onnx, tflite-int8]}
devices:
  targets: [qemu-aarch64, local]
gates:
  expect: ["clean>=0.9", "robust>=0.5"]
  targets:
    local: ["p50_ms<=5"]
    qemu-aarch64: ["p50_vs_teacher<=0.8"]
  models:
    prox-s0.5: {expect: ["clean>=0.85"], targets: {qemu-aarch64: ["robust>=0.4"]}}
  regression: {max_drop: 0.02}
"""


def test_recipe_gates_section():
    r = parse_recipe(RECIPE, "r.yaml")
    assert r.gates.regression_config().max_drop == 0.02
    spec = r.gates.for_subject("prox-s0.5", "qemu-aarch64")  # model > target > expect
    got = sorted(g.text for gs in spec.values() for g in gs)
    assert got == ["clean>=0.85", "p50_vs_teacher<=0.8", "robust>=0.4"]
    assert r.to_dict()["gates"]["expect"] == ("clean>=0.9", "robust>=0.5")


@pytest.mark.parametrize(
    "old, new, says",
    [
        (
            '"robust>=0.5"]',
            '"robust>=0.5", "p50_ms<=3"]',
            "r.yaml:10: gates.expect: gate 'p50_ms<=3': absolute latency",
        ),
        (
            'qemu-aarch64: ["p50_vs',
            'qemu-aarch64: ["p99_ms<=1", "p50_vs',
            "r.yaml:13: gates.targets.qemu-aarch64: gate 'p99_ms<=1'",
        ),
        ("prox-s0.5: {", "prox-s9: {", "r.yaml:15: gates.models.prox-s9: no model named prox-s9"),
        ("local: [", "vm-aarch64: [", "gates.targets.vm-aarch64: not a devices target"),
        (
            '"clean>=0.9"',
            '"clean=>0.9"',
            "r.yaml:10: gates.expect[0]: gate 'clean=>0.9': compare clean with >=",
        ),
        ("max_drop: 0.02", "max_drop: 2", "gates.regression.max_drop: max_drop must lie in [0, 1)"),
    ],
)
def test_recipe_gates_refused_with_file_line(old, new, says):
    assert old in RECIPE
    with pytest.raises(RobustEdgeError) as e:
        parse_recipe(RECIPE.replace(old, new, 1), "r.yaml")
    assert says in str(e.value)
