"""The tflm target: a bundle's int8 model on the real TFLM interpreter (tflite-micro), with the
arena it needs, its TFLM flash bytes, its ops against TFLM's kernels, on-interpreter accuracy,
transfer and Square robustness, and parity with the TFLite interpreter."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="pip install tflite-micro (requirements/mcu.txt)")

from robustedge.device.board import tflm  # noqa: E402
from robustedge.device.board.config import BenchConfig  # noqa: E402
from robustedge.errors import RobustEdgeError  # noqa: E402


def fc_model(weights: np.ndarray) -> bytes:
    """A one-op int8 model built by hand: y = x @ weights.T (scales 0.5 in and out, weight
    scale 1, zero points 0, no bias), input (1, K), output (1, N)."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor as me
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    n, k = weights.shape
    q = me.Quantization(scales=0.5, zero_points=0)
    x = me.Tensor(shape=(1, k), dtype=fb.TensorType.INT8, quantization=q, name="x")
    wq = me.Quantization(scales=[1.0] * n, zero_points=[0] * n, axis=0)
    w = me.Tensor(shape=(n, k), dtype=fb.TensorType.INT8, data=weights, quantization=wq)
    y = me.Tensor(shape=(1, n), dtype=fb.TensorType.INT8, quantization=q, name="y")
    op = me.Operator(opcode=fb.BuiltinOperator.FULLY_CONNECTED, inputs=[x, w, None], outputs=[y])
    op._fb.builtinOptionsType = fb.BuiltinOptions.FullyConnectedOptions
    op._fb.builtinOptions = fb.FullyConnectedOptionsT()
    sg = me.Subgraph(tensors=[x, w, y], operators=[op], inputs=[x], outputs=[y])
    return bytes(me.Model(subgraphs=[sg]).build())


def test_fc_by_hand_output_arena_head_and_smallest_arena():
    data = fc_model(np.array([[1, -1, 1, -1], [1, 1, 1, 1]], np.int8))
    out = tflm.invoke(tflm.interpreter(data), np.array([[2, 4, 6, 8]], np.int8))
    # real x = [1,2,3,4]; y = [1-2+3-4, 1+2+3+4] = [-2, 10]; at scale 0.5: [-4, 20]
    assert out.tolist() == [[-4, 20]]
    a = tflm.arena(data)
    # the planner's head holds the input (4 B) and output (2 B), each aligned to 16 bytes
    assert a["head_bytes"] == 16 + 16
    assert a["recorded_bytes"] == a["head_bytes"] + a["tail_bytes"]
    x = np.zeros((1, 4), np.int8)
    # the reported arena is the smallest that works: it runs, one byte less does not
    assert tflm.runs_with(data, x, a["arena_bytes"])
    assert not tflm.runs_with(data, x, a["arena_bytes"] - 1)
    assert tflm.ops(data)["used"] == {"FULLY_CONNECTED": 1}
    assert tflm.ops(data)["line"] == "all ops supported by TFLM"


def test_lut_compression_by_hand_is_lossless():
    rng = np.random.default_rng(0)
    w = rng.choice(np.array([-3, 5], np.int8), size=(2, 2048))  # 2 values per channel: 1 bit
    data = fc_model(w)
    packed, info = tflm.lut_compress(data)
    assert info["compressed"] and info["tensors"][0]["bits"] == 1
    # 2 x 2048 indices of 1 bit = 512 bytes encoded, plus the tables and their header
    assert 512 < info["tensors"][0]["lut_bytes"] < 600 and info["tensors"][0]["bytes"] == 4096
    assert len(packed) < len(data)
    x = rng.integers(-20, 20, size=(1, 2048)).astype(np.int8)
    plain = tflm.invoke(tflm.interpreter(data), x)
    assert np.array_equal(tflm.invoke(tflm.interpreter(packed), x), plain)
    # dense weights (more than 2**7 distinct values per channel) are left alone
    dense = fc_model(np.arange(-128, 128, dtype=np.int8).reshape(1, 256))
    assert tflm.lut_compress(dense) == (dense, {"tensors": [], "compressed": False})
    # so is a tensor too small for the DECODE op's overhead to pay off
    small = fc_model(w[:, :64])
    assert tflm.lut_compress(small) == (small, {"tensors": [], "compressed": False})


def test_unsupported_op_is_named_and_garbage_is_one_line():
    from tflite_micro.tensorflow.lite.micro.compression import model_editor as me
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = me.read(fc_model(np.ones((2, 4), np.int8)))
    model.subgraphs[0].operators[0].opcode = fb.BuiltinOperator.DENSIFY
    verdict = tflm.ops(bytes(model.build()))
    assert verdict["unsupported"] == ["DENSIFY"]
    assert verdict["line"] == "unsupported by TFLM: DENSIFY"
    with pytest.raises(tflm.TFLMError, match="not a TFLite flatbuffer"):
        tflm.ops(b"\x00" * 64 + b"garbage")


@pytest.fixture(scope="module")
def int8_bundle(tiny_run, tmp_path_factory):
    """``tiny_run`` exported to tflite-int8 (its transfer set: PGD-5) and bundled."""
    from robustedge.device.host.bundle import build_bundle
    from robustedge.export import ExportConfig, export_run

    run = tmp_path_factory.mktemp("tflm") / "run"
    shutil.copytree(tiny_run, run)
    export_run(run, ExportConfig(formats="tflite-int8", transfer_steps=5, transfer_restarts=1))
    return build_bundle(run, tmp_path_factory.mktemp("tflm-bundle") / "tiny")


def test_tflm_target_bench(int8_bundle):
    from robustedge.device.host.targets import is_emulated, make_target

    cfg = BenchConfig(square_queries=20, square_n=10)
    res = make_target("tflm").bench(int8_bundle, cfg)
    assert res["target"] == "tflm" and res["backend"] == "tflm" and res["format"] == "tflite-int8"
    assert res["latency"] is None and "no microcontroller" in res["latency_note"]
    assert is_emulated("tflm")  # latency budgets refuse it
    mcu = res["mcu"]
    assert mcu["ops"]["unsupported"] == [] and mcu["ops"]["failing"] == {}
    assert mcu["flash"]["tflm_flash_bytes"] == res["model_bytes"]
    assert mcu["arena"]["arena_bytes"] > mcu["arena"]["head_bytes"] > 0
    # TFLM against the TFLite interpreter (BUILTIN_REF) on every evaluation image
    for name in ("clean", "transfer"):
        assert mcu["parity"][name]["n"] == res["n_eval"][name]
        assert mcu["parity"][name]["same_class"] >= 0.99
    # robustness measured on the interpreter: transfer set and Square, worst case per image
    assert res["robust"][0]["name"] == "Square-20" and res["robust"][0]["n"] == 10
    assert res["worst_case"]["acc"] <= res["accuracy"]["clean"]
    assert "weaker than default" in res["worst_case"]["weaker"]
    ethos = mcu["ethos_u"]
    assert "skipped" in ethos or (ethos["accelerator"] == "ethos-u55-128" and ethos["cycles"] > 0)


def test_tflm_target_refuses_what_it_cannot_run(int8_bundle):
    from robustedge.device.host.targets import make_target

    with pytest.raises(RobustEdgeError, match="runs the tflm backend"):
        make_target("tflm").bench(int8_bundle, BenchConfig(backend="litert"))
    with pytest.raises(RobustEdgeError, match="int8 TFLite formats"):
        make_target("tflm").bench(int8_bundle, BenchConfig(format="onnx"))


def test_vela_estimate_of_a_hand_built_model(tmp_path):
    from robustedge.device.host import vela

    if not vela.accelerators():
        pytest.skip("pip install ethos-u-vela (requirements/mcu.txt)")
    path = tmp_path / "fc.tflite"
    path.write_bytes(fc_model(np.ones((2, 64), np.int8)))
    est = vela.estimate(path, "ethos-u55-64")
    assert est["accelerator"] == "ethos-u55-64" and est["cpu_ops"] == {}
    assert est["macs"] == 2 * 64  # one FC of 64 inputs and 2 outputs
    assert est["sram_bytes"] > 0 and est["flash_bytes"] > 0 and est["cycles"] > 0
    assert est["time_ms"] == pytest.approx(est["cycles"] / (est["clock_mhz"] * 1e3), rel=1e-6)
    assert est["label"].startswith("estimate: vela")
    # a float model stays on the CPU: its operators are named
    import tflite_micro

    sine = Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite"
    assert set(vela.estimate(sine)["cpu_ops"]) == {"FULLY_CONNECTED", "RELU"}


def test_tflm_target_names_an_ethos_u_configuration():
    from robustedge.device.host.targets import make_target, target_class

    if not __import__("robustedge.device.host.vela", fromlist=["x"]).accelerators():
        pytest.skip("pip install ethos-u-vela (requirements/mcu.txt)")
    assert make_target("tflm:ethos-u85-256").accelerator == "ethos-u85-256"
    assert make_target("tflm").accelerator is None
    with pytest.raises(RobustEdgeError, match="unknown Ethos-U configuration 'npu9'"):
        target_class("tflm:npu9")


def test_bench_command_on_tflm_prints_the_mcu_section(int8_bundle, cli, tmp_path):
    out = tmp_path / "r.json"
    r = cli("bench", "--bundle", str(int8_bundle), "--target", "tflm", "--out", str(out),
            "--square-queries", "5", "--square-n", "3")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "TFLM arena" in r.stdout and "ops: all ops supported by TFLM" in r.stdout
    assert "same class" in r.stdout and "latency p50" not in r.stdout
    import json

    assert json.loads(out.read_text())["mcu"]["flash"]["tflm_flash_bytes"] > 0
    bad = cli("bench", "--bundle", str(int8_bundle), "--target", "tflm:ethos-u99")
    assert bad.returncode != 0 and "unknown Ethos-U configuration" in bad.stderr
    assert "Traceback" not in bad.stderr
