"""Exact-value unit tests of export (parity record, ledger), to kill mutmut's mutants (issue 16;
the rule is in tests/test_exact_attacks.py)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
import torch.nn as nn

# ------------------------------------------------------------------------- export/parity


def test_margins_validate():
    from robustedge.export.parity import Margins, is_quantized

    assert (Margins().clean, Margins().robust) == (1.0, 2.0)
    Margins(0.0, 0.0)
    with pytest.raises(ValueError, match="margins must be >= 0, got clean=-1 robust=2.0"):
        Margins(clean=-1)
    with pytest.raises(ValueError, match="margins must be >= 0, got clean=1.0 robust=-0.5"):
        Margins(robust=-0.5)
    with pytest.raises(ValueError):
        Margins(clean=float("nan"))
    assert is_quantized("tflite-int8") and is_quantized("onnx-int8")
    assert not is_quantized("onnx") and not is_quantized("tflite-float32")


def test_parity_record_exact():
    from robustedge.export.parity import Margins, failure_message, parity

    y = np.array([0, 1, 1, 0])
    torch_clean = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0], [1.0, 0.0]])  # 4/4 right
    torch_adv = np.array([[0.0, 1.0], [0.0, 3.0], [1.0, 0.0], [1.0, 0.0]])  # 2/4 right
    clean = torch_clean.copy()
    clean[2] = [1.5, 0.0]  # 3/4 right; diff 1.5 at [2, 0], 1.0 at [2, 1]
    adv = torch_adv.copy()
    adv[0] = [2.5, 1.0]  # now right: 3/4; diff 2.5
    rec = parity("tflite-int8", clean, adv, torch_clean, torch_adv, y, Margins(30.0, 0.0))
    assert rec["clean_acc"] == 0.75 and rec["transfer_acc"] == 0.75
    assert rec["torch_clean_acc"] == 1.0 and rec["torch_transfer_acc"] == 0.5
    assert rec["agreement_clean"] == 0.75 and rec["agreement_transfer"] == 0.75
    assert rec["max_abs_logit_diff"] == 2.5 and rec["logit_scale"] == 3.0 and rec["n"] == 4
    assert rec["clean_drop_pts"] == 25.0 and rec["transfer_drop_pts"] == -25.0
    assert rec["margins"] == {"clean": 30.0, "robust": 0.0} and rec["passed"] is True
    assert type(rec["n"]) is int and type(rec["passed"]) is bool
    rec = parity("tflite-int8", clean, adv, torch_clean, torch_adv, y, Margins(25.0, 0.0))
    assert rec["passed"] is True
    rec = parity("tflite-int8", clean, adv, torch_clean, torch_adv, y, Margins(24.9, 0.0))
    assert rec["passed"] is False
    assert failure_message("tflite-int8", rec) == (
        "parity gate failed for tflite-int8: clean 75.00% vs PyTorch 100.00% (drop 25.00 pt, "
        "allowed 24.9), transfer 75.00% vs 50.00% (drop -25.00 pt, allowed 0)"
    )
    small = np.array([[0.1, 0.0]] * 4)
    rec = parity("onnx", small, small, small, small, y, Margins())
    assert rec["logit_scale"] == 1.0 and rec["margins"]["max_abs_logit_diff"] == 1e-4
    ok = parity("onnx", clean, adv, clean, adv, y, Margins())
    assert ok["passed"] is True and ok["margins"]["max_abs_logit_diff"] == pytest.approx(3e-4)
    lite = parity("tflite-float32", clean, adv, clean, adv, y, Margins())
    assert lite["margins"]["max_abs_logit_diff"] == pytest.approx(3e-3)
    # the tolerance is the format descriptor's: a format registered with its own uses it
    from dataclasses import replace

    from robustedge.export.formats import FORMATS, register_format

    half = replace(FORMATS["tflite-float32"], name="t-f16", file="m16.tflite", logit_tol=2e-3)
    register_format(half)
    try:
        other = parity("t-f16", clean, adv, clean, adv, y, Margins())
        assert other["margins"]["max_abs_logit_diff"] == pytest.approx(6e-3)
    finally:
        FORMATS.unregister("t-f16")
    bad = parity("onnx", clean + 0.01, adv, clean, adv, y, Margins())
    assert bad["passed"] is False and bad["clean_drop_pts"] == 0
    assert failure_message("onnx", bad).endswith(", max |logit diff| 0.01 (allowed 0.0003)")
    assert parity("onnx", clean, adv + 0.01, clean, adv, y, Margins())["passed"] is False
    assert failure_message("onnx", bad).startswith(
        "parity gate failed for onnx: clean 75.00% vs PyTorch 75.00% (drop 0.00 pt, allowed 1)"
    )
    big_adv = parity("onnx", clean, adv * 7, clean, adv * 7, y, Margins())
    assert big_adv["logit_scale"] == 21.0  # 3 * 7: the transfer logits set the scale
    big_clean = parity("onnx", clean * 9, adv, clean * 9, adv, y, Margins())
    assert big_clean["logit_scale"] == 27.0  # 3 * 9: the clean logits set it
    rec = {
        "clean_acc": 0.25,
        "torch_clean_acc": 0.5,
        "transfer_acc": 0.1,
        "torch_transfer_acc": 0.2,
        "clean_drop_pts": 25.0,
        "transfer_drop_pts": 10.0,
        "max_abs_logit_diff": 0.5,
        "margins": {"clean": 1.5, "robust": 2.0, "max_abs_logit_diff": 0.25},
    }
    assert failure_message("tflite-float32", rec) == (
        "parity gate failed for tflite-float32: clean 25.00% vs PyTorch 50.00% (drop 25.00 pt, "
        "allowed 1.5), transfer 10.00% vs 20.00% (drop 10.00 pt, allowed 2), "
        "max |logit diff| 0.5 (allowed 0.25)"
    )


# ------------------------------------------------------------------------- export/ledger


def test_ledger_helpers_exact(tmp_path):
    from robustedge.export import ledger

    f = tmp_path / "w.bin"
    raw = bytes(range(256)) * 4
    f.write_bytes(raw)
    assert ledger.file_sizes(f) == {
        "bytes": 1024,
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0)),
    }
    assert ledger.structure_of({"structure": "shrunk"}) == "shrunk"
    assert ledger.structure_of({"structure": "masked"}) == "masked"
    assert ledger.structure_of({"structure": "other"}) == "dense"
    assert ledger.structure_of({}) == "dense"
    assert ledger.stage_name({"structure": "shrunk"}, True) == "PyTorch physically shrunk student"
    assert ledger.stage_name({"structure": "masked"}, False) == "PyTorch masked student"
    assert ledger.stage_name({}, True) == "PyTorch student"
    assert ledger.stage_name({}, False) == "PyTorch model"
    row = {"weight_zeros": 1, "weight_count": 100}
    assert ledger.verdict({"structure": "shrunk"}, row) == ledger.STRUCTURED
    assert ledger.verdict({"structure": "masked"}, {"weight_zeros": 0, "weight_count": 9}) == (
        ledger.UNSTRUCTURED
    )
    assert ledger.verdict({}, row) == ledger.UNSTRUCTURED  # exactly 1 %: sparse
    assert ledger.verdict({}, {"weight_zeros": 0, "weight_count": 100}) == ledger.DENSE
    assert ledger.verdict({}, {"weight_zeros": 0, "weight_count": 0}) == ledger.DENSE
    assert ledger.verdict({}, {"weight_zeros": 99, "weight_count": 10_000}) == ledger.DENSE
    assert ledger.STRUCTURED.startswith("physically smaller")
    assert ledger.UNSTRUCTURED.startswith("zeros only") and ledger.DENSE.startswith("dense")
    teacher = {"params": 100, "nonzeros": 50, "macs": 1000, "bytes": 400, "gzip_bytes": 0}
    student = {"params": 50, "nonzeros": 10, "macs": 250, "bytes": 100, "gzip_bytes": 7}
    assert ledger.ratios(teacher, student) == {
        "params": 0.5,
        "nonzeros": 0.2,
        "macs": 0.25,
        "bytes": 0.25,
    }
    assert ledger.ratios(teacher, {"params": 10}) == {"params": 0.1}
    assert ledger.zeros_survived({"weight_zeros": 5}, {"weight_zeros": 5})
    assert not ledger.zeros_survived({"weight_zeros": 5}, {"weight_zeros": 4})
    assert ledger.zeros_survived({"weight_zeros": 5}, {"weight_zeros": 0, "int8_weight_zeros": 6})
    assert not ledger.zeros_survived(
        {"weight_zeros": 5}, {"weight_zeros": 9, "int8_weight_zeros": 4}
    )
    assert ledger._is_weight(np.zeros(3, np.float32)) and ledger._is_weight(np.zeros(2, np.int8))
    assert ledger._is_weight(np.zeros(2, np.uint8)) and ledger._is_weight(np.zeros(2, np.int32))
    assert not ledger._is_weight(np.zeros(2, np.int64))
    assert not ledger._is_weight(np.float32(1.0).reshape(()))
    assert ledger.SPARSE_MIN == 0.01


def test_ledger_torch_stage_exact(tmp_path):
    from robustedge.export.ledger import torch_stage, weight_arrays

    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten())
    net.append(nn.Linear(2 * 4 * 4, 3))
    with torch.no_grad():
        net[0].weight[0].zero_()  # 9 zeros
        net[0].bias.zero_()  # 2 zeros, not weights
        net[3].weight[:, :4] = 0  # 12 zeros
    ws = weight_arrays(net)
    assert [w.shape for w in ws] == [(2, 1, 3, 3), (3, 32)]
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x" * 10)
    row = torch_stage("PyTorch model", net, (1, 4, 4), f)
    params = 18 + 2 + 2 + 2 + 96 + 3
    assert row == {
        "stage": "PyTorch model",
        "params": params,
        "nonzeros": params - 9 - 2 - 12 - 2,  # BatchNorm's running mean is a buffer; beta = 0
        "weight_zeros": 21,
        "weight_count": 18 + 96,
        "macs": 18 * 16 + 96,
        "bytes": 10,
        "gzip_bytes": len(gzip.compress(b"x" * 10, compresslevel=9, mtime=0)),
        "file": "model.safetensors",
    }
    no_file = torch_stage("s", net, (1, 4, 4), tmp_path / "missing")
    assert "bytes" not in no_file and "file" not in no_file
    assert "file" not in torch_stage("s", net, (1, 4, 4), None)


def test_ledger_onnx_stage_exact(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from robustedge.export.ledger import format_table, onnx_stage

    w = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]], np.float32)
    b = np.array([0.0, 1.0, 2.0], np.float32)
    q = np.array([[0, 3], [-1, 0]], np.int8)
    inits = [
        numpy_helper.from_array(w, "fc.weight"),
        numpy_helper.from_array(b, "fc.bias"),
        numpy_helper.from_array(q, "q.weight"),
        numpy_helper.from_array(np.array([0.5, 0.25], np.float32), "w_scale"),
        numpy_helper.from_array(np.array([0, 0], np.int8), "w_zero_point"),
        numpy_helper.from_array(np.array([1, 3], np.int64), "shape"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    yv = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    node = helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["y"], transB=1)
    graph = helper.make_graph([node], "g", [x], [yv], initializer=inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    row = onnx_stage(path, 42)
    raw = path.read_bytes()
    assert row == {
        "stage": "m.onnx",
        "params": 6 + 3 + 4,
        "nonzeros": 2 + 2 + 2,
        "weight_zeros": 4 + 2,
        "weight_count": 6 + 4,
        "macs": 42,
        "bytes": len(raw),
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0)),
        "file": "m.onnx",
    }
    table = format_table({"stages": [row], "verdict": "dense (no sparsity to keep)"})
    lines = table.splitlines()
    assert lines[0].split() == [
        "stage", "params", "nonzeros", "w-zeros", "MACs", "bytes", "gzip", "zeros", "kept"
    ]  # fmt: skip
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])
    assert lines[2].split() == ["m.onnx", "13", "6", "6", "42", f"{len(raw):,}",
                                f"{row['gzip_bytes']:,}", "-"]  # fmt: skip
    assert lines[3] == "sparsity: dense (no sparsity to keep)"
    long = dict(row, stage="x" * 40, zeros_survived=False, params=1234567)
    line = format_table({"stages": [long, dict(row, zeros_survived=True)], "verdict": "v"})
    first, second = line.splitlines()[2:4]
    assert first.startswith("x" * 34 + " ") and "1,234,567" in first and first.endswith("NO")
    assert second.endswith("yes")
    bare = {k: v for k, v in row.items() if k not in ("bytes", "gzip_bytes")}
    assert format_table({"stages": [bare], "verdict": "v"}).splitlines()[2].split()[5:7] == [
        "0",
        "0",
    ]


_TFLITE: dict = {}  # built once per process (mutmut's forked workers inherit it)


def _tflite_models() -> dict:
    """A 4 -> 3 dense layer with 5 zero weights as float32 and full-int8 .tflite bytes."""
    if not _TFLITE:
        tf = pytest.importorskip("tensorflow")
        w = np.array(
            [[0.0, 1.0, -2.0], [0.5, 0.0, 0.25], [0.0, -1.5, 0.0], [2.0, 0.75, 0.0]], np.float32
        )
        b = np.array([0.1, -0.2, 0.3], np.float32)
        wt, bt = tf.constant(w), tf.constant(b)

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def dense(x):
            return tf.matmul(x, wt) + bt

        fn = dense.get_concrete_function()
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], dense)
        _TFLITE["float"] = conv.convert()
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], dense)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        rng = np.random.default_rng(0)
        conv.representative_dataset = lambda: (
            [rng.random((1, 4), dtype=np.float32)] for _ in range(16)
        )
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
        _TFLITE["int8"] = conv.convert()
    return _TFLITE


@pytest.mark.export
@pytest.mark.slow  # TensorFlow's converter: ~30-50 s on the loaded 2-core machine
@pytest.mark.parametrize("kind", ["float", "int8"])
def test_ledger_tflite_stage_exact(tmp_path, kind):
    pytest.importorskip("tflite")
    pytest.importorskip("ai_edge_litert")
    from robustedge.export.ledger import tflite_constants, tflite_stage, zeros_survived

    path = tmp_path / f"m_{kind}.tflite"
    path.write_bytes(_tflite_models()[kind])
    consts = tflite_constants(path)
    shapes = sorted(tuple(a.shape) for _d, a in consts)
    assert shapes == [(3,), (3, 4)], shapes  # FULLY_CONNECTED stores W transposed
    row = tflite_stage(path, 12)
    raw = path.read_bytes()
    want = {
        "stage": path.name,
        "params": 15,
        "nonzeros": 7 + 3,
        "weight_zeros": 5,
        "weight_count": 12,
        "macs": 12,
        "bytes": len(raw),
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0)),
        "file": path.name,
    }
    if kind == "int8":
        want["int8_weight_zeros"] = 5
        dtypes = {np.dtype(d["dtype"]).name for d, _a in consts}
        assert dtypes == {"int8", "int32"}
    assert row == want
    assert zeros_survived({"weight_zeros": 5}, row)


def test_ledger_sparse_savings_and_table(tmp_path):
    from robustedge.export.ledger import format_table, ratios, sparse_savings

    dense, sparse, other = tmp_path / "d.tflite", tmp_path / "s.tflite", tmp_path / "o"
    dense.write_bytes(b"\0" * 1000)
    sparse.write_bytes(bytes(range(200)) * 2)
    other.write_bytes(b"x")
    made = {"tflite-int8": dense, "tflite-int8-sparse": sparse, "onnx": other}
    gz = lambda p: len(gzip.compress(p.read_bytes(), compresslevel=9, mtime=0))  # noqa: E731
    got = sparse_savings(
        made,
        {"tflite-int8-sparse": "tflite-int8", "missing": "tflite-int8", "onnx": "gone"},
    )
    assert got == {
        "tflite-int8-sparse": {
            "dense_format": "tflite-int8",
            "bytes": 400,
            "dense_bytes": 1000,
            "saved_bytes": 600,
            "ratio": 0.4,
            "gzip_bytes": gz(sparse),
            "dense_gzip_bytes": gz(dense),
        }
    }
    assert sparse_savings(made, {}) == {}
    row = {"stage": "s", "params": 1, "nonzeros": 1, "weight_zeros": 0, "macs": 1}
    table = format_table({"stages": [row], "verdict": "v", "sparse_encoding": got})
    assert table.splitlines()[-1] == (
        "tflite-int8-sparse: 400 B vs 1,000 B dense (600 B saved by the sparse encoding)"
    )
    assert format_table({"stages": [row], "verdict": "v", "sparse_encoding": None}).endswith(
        "sparsity: v"
    )
    teacher = {"params": 4, "nonzeros": 4, "macs": 4, "bytes": 4, "gzip_bytes": 8}
    assert ratios(teacher, {"gzip_bytes": 2}) == {"gzip_bytes": 0.25}
