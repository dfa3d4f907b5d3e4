"""``robustedge.api.check``: the CI gate from Python, the same verdicts as `robustedge check`
(which calls it), thresholds as keyword settings."""

from __future__ import annotations

import json

import pytest

import robustedge
from conftest import run_cli
from robustedge import api
from robustedge.errors import RobustEdgeError
from test_gates import results, write


def test_check_from_python_equals_the_cli(tmp_path):
    a = write(tmp_path, "s1.json", results(robust=0.70))
    r = api.check(a, ["clean>=0.9", "robust>=0.75"])
    assert [o.passed for o in r.outcomes] == [True, False] and not r.passed
    assert r.failures[0].line.startswith("s1 @ qemu-aarch64 [tflite-int8]: robust = 0.7")
    assert robustedge.check(str(a), "robust>=0.7").passed  # one expression, path as str
    cli = run_cli("check", str(a), "--expect", "clean>=0.9", "--expect", "robust>=0.75")
    assert cli.returncode == 1 and f"FAIL {r.failures[0].line}" in cli.stdout


def test_thresholds_are_keyword_settings(tmp_path):
    # flash grew 2000 -> 2300 B: +15 %; the default max_flash_growth is 0.05
    b = write(tmp_path, "base.json", results())
    n = write(tmp_path, "new.json", results(flash_bytes=2300))
    flash = [o for o in api.check(n, baseline=b).outcomes if o.metric == "flash_bytes"]
    assert [o.passed for o in flash] == [False]
    loose = api.check(n, baseline=b, max_flash_growth=0.2)
    assert [o.passed for o in loose.outcomes if o.metric == "flash_bytes"] == [True]
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  regression:\n    max_flash_growth: 0.2\n")
    assert api.check(n, gates=gates, baseline=b).passed  # the file's threshold
    tight = api.check(n, gates=gates, baseline=b, max_flash_growth=0.1)  # replaces the file's
    assert not tight.passed
    assert json.loads(json.dumps(tight.to_dict()))["counts"]["failed"] == 1
    with pytest.raises(RobustEdgeError, match="unknown RegressionConfig setting"):
        api.check(n, baseline=b, max_flash=0.2)
