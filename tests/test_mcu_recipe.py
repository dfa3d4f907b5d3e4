"""A recipe benches its models on the tflm target: the device stage records the MCU section
(arena, TFLM flash, ops, parity, Ethos-U estimate) and the report's collect code reads it.

The recipe's export calibrates as the session's ``device_export`` does (the default draw from
the same teacher): in one test session its onnx2tf conversion is made once."""

from __future__ import annotations

import pytest

pytest.importorskip("tflite_micro", reason="pip install tflite-micro (requirements/mcu.txt)")

RECIPE = """\
name: mcu-tiny
seed: 0
data: {{name: digits}}
teacher:
  load: {teacher}
export:
  formats: [tflite-int8]
  transfer_steps: 2
  transfer_restarts: 1
  clean_margin: 50
  robust_margin: 50
devices:
  targets: [tflm]
  square_queries: 10
  square_n: 5
"""


@pytest.mark.slow
def test_recipe_benches_on_tflm(tiny_run, tmp_path):
    import json

    from robustedge.recipe import load_recipe
    from robustedge.recipe.stages import run_recipe

    recipe = tmp_path / "mcu.yaml"
    recipe.write_text(RECIPE.format(teacher=tiny_run))
    out = tmp_path / "out"
    run_recipe(load_recipe(recipe), out)
    found = [json.loads(p.read_text()) for p in out.rglob("results*.json")]
    found = [r for r in found if isinstance(r, dict) and r.get("target") == "tflm"]
    assert found, sorted(str(p.relative_to(out)) for p in out.rglob("*.json"))
    res = found[0]
    assert res["backend"] == "tflm" and res["latency"] is None
    assert res["mcu"]["arena"]["arena_bytes"] > 0 and res["mcu"]["ops"]["unsupported"] == []
    assert res["worst_case"]["n"] == 5
    from robustedge.report.build import build_report
    from robustedge.report.mcu import TITLE

    md = build_report([out], tmp_path / "report.html").md_path.read_text()
    assert TITLE in md and "all ops supported by TFLM" in md
    arena = f"{res['mcu']['arena']['arena_bytes']:,}"
    assert arena in md and "256K SRAM / 512K flash" in md  # the tiny CNN fits both classes
