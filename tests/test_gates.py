"""Gates for CI (robustedge.gates): expressions, the statistics of the regression gate, the
per-image outcome codec, gate resolution, and the check's verdicts on results files whose
figures are set here, each checked against a value worked out by hand."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from robustedge.device.board.measure import pack_outcomes, unpack_outcomes
from robustedge.gates import GateError, GatesSpec, RegressionConfig, check, parse_gate
from robustedge.gates.report import junit_xml, markdown
from robustedge.gates.stats import binom_sf, mcnemar_exact, paired_drop, two_proportion

# ---- expressions -------------------------------------------------------------------------


def test_gate_values_and_scales():
    assert parse_gate("clean>=0.97").value == 0.97
    assert parse_gate("robust >= 75%").value == pytest.approx(0.75)
    assert parse_gate("macs<=2M").value == 2e6
    g = parse_gate("parity=pass")
    assert g.holds("pass") and not g.holds("fail")
    assert parse_gate("flash_kb<=64").holds(64.0) and not parse_gate("flash_kb<64").holds(64.0)


@pytest.mark.parametrize(
    "text, says",
    [
        ("clen>=0.9", "unknown metric 'clen' (known: clean"),
        ("clean>=>0.9", "is not a number"),
        ("clean 0.9", "cannot parse gate"),
        ("parity>=1", "parity is pass/fail"),
        ("clean=0.9", "compare clean with >= <= > <"),
    ],
)
def test_bad_gates_say_why(text, says):
    with pytest.raises(GateError, match=None) as e:
        parse_gate(text)
    assert says in str(e.value)


# ---- statistics (one step each, by hand) -----------------------------------------------------


def test_mcnemar_exact_by_hand():
    # 8 images lost, 1 gained: under "no change" b ~ Bin(9, 1/2);
    # P(X >= 8) = (C(9,8) + C(9,9)) / 2^9 = (9 + 1) / 512
    assert mcnemar_exact(8, 1) == pytest.approx(10 / 512)
    # 3 lost, 1 gained: P(X >= 3 | n=4) = (4 + 1) / 16
    assert mcnemar_exact(3, 1) == pytest.approx(5 / 16)
    assert mcnemar_exact(0, 5) == 1.0 and binom_sf(5, 4) == 0.0


def test_two_proportion_by_hand():
    # 405/450 (0.90) vs 383/450 (0.8511): pooled p = 788/900 = 0.875556, p (1-p) = 0.108958,
    # se = sqrt(0.108958 * 2/450) = 0.022006, z = 0.048889 / 0.022006 = 2.2216; the normal
    # table's upper tail is 0.01321 at z = 2.22 and 0.01287 at 2.23: 0.01316 at 2.2216
    assert two_proportion(405, 450, 383, 450) == pytest.approx(0.01316, abs=3e-5)
    p = 788 / 900
    z = (405 / 450 - 383 / 450) / math.sqrt(p * (1 - p) * (2 / 450))
    assert z == pytest.approx(2.2216, abs=1e-4)


def test_paired_drop_counts_discordant_images():
    base = [True] * 10 + [False] * 2
    new = [False] * 8 + [True] * 2 + [True, False]  # 8 lost, 1 gained
    t = paired_drop(base, new)
    assert t.test == "McNemar exact" and t.p_value == pytest.approx(10 / 512)
    assert "8 lost vs 1 gained" in t.detail


def test_outcome_codec_by_hand():
    bits = [1, 0, 1, 1, 0, 0, 0, 0, 1]  # bytes 0b10110000, 0b10000000 = b0 80
    text = pack_outcomes(np.array(bits, dtype=bool))
    assert text == "sIA="
    assert unpack_outcomes(text, 9).tolist() == [bool(b) for b in bits]
    with pytest.raises(ValueError, match="not 20 images"):
        unpack_outcomes(text, 20)
    with pytest.raises(ValueError, match="not base64"):
        unpack_outcomes("%%%", 9)


# ---- resolution ----------------------------------------------------------------------------


def test_most_specific_gate_wins_per_metric():
    spec = GatesSpec.from_mapping(
        {
            "expect": ["clean>=0.9", "robust>=0.7"],
            "targets": {"qemu-aarch64": ["robust>=0.6"]},
            "models": {
                "s1": {"expect": ["clean>=0.8"], "targets": {"qemu-aarch64": ["robust>=0.5"]}}
            },
        }
    )
    texts = lambda m, t: sorted(g.text for gs in spec.for_subject(m, t).values() for g in gs)  # noqa: E731
    assert texts("s0", "local") == ["clean>=0.9", "robust>=0.7"]
    assert texts("s0", "qemu-aarch64") == ["clean>=0.9", "robust>=0.6"]
    assert texts("s1", "local") == ["clean>=0.8", "robust>=0.7"]
    assert texts("s1", "qemu-aarch64") == ["clean>=0.8", "robust>=0.5"]


def test_regression_config_checks_itself():
    with pytest.raises(ValueError, match="alpha"):
        RegressionConfig(alpha=0.0)
    with pytest.raises(ValueError, match="unknown keys"):
        GatesSpec.from_mapping({"regression": {"max_dorp": 0.1}})


# ---- check on results files ------------------------------------------------------------------


def results(target="qemu-aarch64", clean=0.95, robust=0.8, n=20, p50=0.5, run="s1", **kw):
    """A board results object with the fields a bench writes (figures set by the test)."""
    d = {
        "schema": "robustedge.device.results/1",
        "run": run,
        "target": target,
        "emulated": target.startswith("qemu"),
        "format": "tflite-int8",
        "accuracy": {"clean": clean, "transfer": robust},
        "n_eval": {"clean": n, "transfer": n},
        "robust": [],
        "worst_case": {"acc": robust, "n": n, "label": f"worst of PGD-20 transfer, {n} images"},
        "latency": {"p50_ms": p50},
        "flash_bytes": 2000,
        "model_bytes": 5000,
        "peak_rss_mb": 30.0,
        "parity": {"clean": {"host": clean, "board": clean, "equal": True}},
        "board": {"machine": "aarch64"},
    }
    d.update(kw)
    return d


def write(tmp: Path, name: str, obj) -> Path:
    p = tmp / name
    p.write_text(json.dumps(obj))
    return p


def test_check_verdicts_and_lines(tmp_path):
    a = write(tmp_path, "s1.json", results(robust=0.70))
    r = check([a], ["clean>=0.9", "robust>=0.75", "flash_kb<=2", "parity=pass"])
    assert [o.passed for o in r.outcomes] == [True, False, True, True]  # 2000 B = 1.953 KiB
    (bad,) = r.failures
    assert bad.line.startswith("s1 @ qemu-aarch64 [tflite-int8]: robust = 0.7, needs >= 0.75")
    assert "worst of PGD-20 transfer" in bad.line  # the robust metric names its attack


def test_absolute_latency_refused_on_emulated_target(tmp_path):
    a = write(tmp_path, "s1.json", results())
    with pytest.raises(GateError, match="emulated target says nothing about a board"):
        check([a], ["p50_ms<=1"])
    real = write(tmp_path, "real.json", results(target="ssh://pi@board", p50=0.8))
    assert check([real], ["p50_ms<=1"]).passed  # a real board: allowed


def test_p50_vs_teacher_same_target(tmp_path):
    t = write(tmp_path, "t.json", results(run="teacher", p50=0.50))
    s = write(tmp_path, "s.json", results(run="s1", p50=0.35))
    r = check([t, s], ["p50_vs_teacher<=0.7"])
    by = {o.model: o for o in r.outcomes}
    assert by["s1"].measured == pytest.approx(0.7) and by["s1"].passed  # 0.35 / 0.50
    assert by["teacher"].measured == 1.0 and not by["teacher"].passed
    lone = check([s], ["p50_vs_teacher<=0.7"])
    assert not lone.passed and lone.outcomes[0].measured is None  # no teacher: not measured


def test_gate_matching_nothing_and_missing_file_are_bad_input(tmp_path):
    a = write(tmp_path, "s1.json", results())
    (tmp_path / "b").mkdir()
    write(tmp_path / "b", "manifest.json", {"run": "s1", "formats": {"tflite-int8": {}}})
    with pytest.raises(GateError, match="applies to none of the inputs"):
        check([tmp_path / "b"], ["p50_ms<=1"])  # a bundle has not run anywhere
    r = check([a], ["macs<=1M"])  # board results alone have no MAC count: not measured
    assert not r.passed and r.outcomes[0].measured is None
    with pytest.raises(GateError, match="no such results file"):
        check([tmp_path / "nope.json"], ["clean>=0.9"])
    with pytest.raises(GateError, match="not a robustedge board results file"):
        check([write(tmp_path, "x.json", {"a": 1})], ["clean>=0.9"])


def paired(bits):
    return {"clean": pack_outcomes(np.array(bits, dtype=bool)), "images": "abc"}


def test_regression_paired_mcnemar(tmp_path):
    """20 images; the baseline gets 12 right, the new model loses 8 of them and gains 1:
    accuracy 0.60 -> 0.25, McNemar p = 10/512 < 0.05: a regression. Lose 3, gain 1 instead
    (0.60 -> 0.50): p = 5/16, noise."""
    base_bits = [True] * 12 + [False] * 8
    worse = [False] * 8 + [True] * 4 + [True] + [False] * 7  # 8 lost, 1 gained
    mild = [False] * 3 + [True] * 9 + [True] + [False] * 7  # 3 lost, 1 gained
    b = write(tmp_path, "base.json", results(clean=0.60, outcomes=paired(base_bits)))
    for bits, acc, ok, p in ((worse, 0.25, False, 10 / 512), (mild, 0.50, True, 5 / 16)):
        n = write(tmp_path, "new.json", results(clean=acc, outcomes=paired(bits)))
        r = check([n], baseline=b)
        (o,) = [o for o in r.outcomes if o.metric == "clean"]
        assert o.passed is ok and f"McNemar exact p={p:.3g}" in o.detail


def test_regression_unpaired_and_growth(tmp_path):
    b = write(tmp_path, "base.json", results(clean=0.90, n=450, flash_bytes=2000))
    n = write(tmp_path, "new.json", results(clean=383 / 450, n=450, flash_bytes=2200))
    r = check([n], baseline=b, regression=RegressionConfig(max_drop=0.01, alpha=0.05))
    by = {o.metric: o for o in r.outcomes}
    assert not by["clean"].passed and "two-proportion z p=0.0132" in by["clean"].detail
    assert not by["flash_bytes"].passed and "+10.0 %" in by["flash_bytes"].detail
    r = check([n], baseline=b, regression=RegressionConfig(alpha=0.01, max_flash_growth=0.1))
    by = {o.metric: o for o in r.outcomes}
    assert by["clean"].passed and by["flash_bytes"].passed  # p = 0.0132 >= 0.01; +10 % allowed


def test_junit_and_markdown(tmp_path):
    a = write(tmp_path, "s1.json", results(robust=0.70))
    r = check([a], ["clean>=0.9", "robust>=0.75"])
    root = ET.fromstring(junit_xml(r))
    suite = root.find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == ["s1", "s1"]
    fail = cases[1].find("failure")
    assert cases[0].find("failure") is None and "robust = 0.7, needs >= 0.75" in fail.get("message")
    md = markdown(r)
    assert "**1 of 2 gates failed**" in md and "| FAIL | s1 | qemu-aarch64 [tflite-int8] |" in md
