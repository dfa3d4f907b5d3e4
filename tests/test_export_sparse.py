"""The sparse int8 TFLite format: TFLite's sparse tensor encoding for pruned weights, made from
onnx2tf's SavedModel with the int8 path's calibration, parity-gated like every format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from robustedge.errors import RobustEdgeError
from robustedge.export import ExportConfig

pytestmark = pytest.mark.export
FAST = ExportConfig(transfer_steps=5, transfer_restarts=1)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory) -> Path:
    """LeNet-5 on digits (2 natural epochs) with 90 % of every conv / linear weight zeroed
    by magnitude (a model big enough for the sparse encoding to pay: the tiny test CNN's
    weights are smaller than the encoding's index overhead)."""
    from robustedge.models import load_model, save_model
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    out = tmp_path_factory.mktemp("sparse") / "run"
    train_run(TrainConfig(model="lenet5", adversary="none", epochs=2, lr=2e-3), out)
    shutil.rmtree(out / "checkpoint")
    model, spec = load_model(out)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                w[w.abs() <= w.abs().flatten().quantile(0.9)] = 0.0
    save_model(out, model.eval(), spec)
    return out


@pytest.fixture(scope="module")
def sparse_export(pruned_run):
    from robustedge.export import export_run

    return export_run(pruned_run, FAST.replace(formats="onnx,tflite-int8,tflite-int8-sparse"))


def test_sparse_format_is_smaller_and_passes_parity(sparse_export):
    art = sparse_export.artifacts
    dense, sparse = art["tflite-int8"], art["tflite-int8-sparse"]
    assert sparse["parity"]["passed"] is True and dense["parity"]["passed"] is True
    assert sparse["bytes"] < 0.8 * dense["bytes"]
    assert sparse["input"]["dtype"] == "int8" and sparse["input"]["layout"] == "NHWC"
    saved = sparse_export.ledger["sparse_encoding"]["tflite-int8-sparse"]
    assert saved["dense_format"] == "tflite-int8"
    assert saved["saved_bytes"] == dense["bytes"] - sparse["bytes"] > 0
    assert sparse_export.path("tflite-int8-sparse").name == "model_int8_sparse.tflite"


def test_sparse_model_has_a_densify_op_and_matches_dense_int8(sparse_export, digits):
    """Same calibration, same quantization: the sparse model computes what the dense one does."""
    import tflite

    buf = sparse_export.path("tflite-int8-sparse").read_bytes()
    graph = tflite.Model.GetRootAsModel(buf, 0)
    ops = {graph.OperatorCodes(i).BuiltinCode() for i in range(graph.OperatorCodesLength())}
    assert tflite.BuiltinOperator.DENSIFY in ops
    from robustedge.export.runners import make_runner

    x = digits.x_test[:100]
    a = make_runner("tflite-int8", sparse_export.path("tflite-int8"), (1, 8, 8)).logits(x)
    b = make_runner("tflite-int8-sparse", sparse_export.path("tflite-int8-sparse"), (1, 8, 8))
    np.testing.assert_array_equal(a.argmax(1), b.logits(x).argmax(1))


def test_sparse_gate_fails_on_bad_calibration(pruned_run, digits, tmp_path):
    from robustedge.export import export_run

    x = digits.x_train[:64] * 20.0  # wrong range: inputs are [0, 1]
    out = tmp_path / "export"
    with pytest.raises(RobustEdgeError, match=r"parity gate failed for tflite-int8-sparse"):
        cfg = FAST.replace(formats="onnx,tflite-int8-sparse")
        export_run(pruned_run, cfg, out=out, calib_x=x)
    assert not out.exists()
    error = json.loads((tmp_path / "export.failed" / "failure.json").read_text())["error"]
    assert "tflite-int8-sparse" in error


def test_board_runner_runs_the_sparse_model(sparse_export, pruned_run, tmp_path):
    """The unchanged board runner (numpy + ai-edge-litert) runs the bundled sparse model and
    reproduces the host parity accuracy with reference kernels."""
    from robustedge.device.host.bundle import build_bundle
    from robustedge.device.host.targets import make_target

    bundle = build_bundle(pruned_run, tmp_path / "bundle", ["tflite-int8-sparse"])
    res = make_target("local").bench(
        bundle,
        [
            "--format",
            "tflite-int8-sparse",
            "--runs",
            "0",
            "--square-queries",
            "0",
            "--reference-kernels",
        ],  # fmt: skip
    )
    host = sparse_export.artifacts["tflite-int8-sparse"]["parity"]
    assert res["accuracy"]["clean"] == pytest.approx(host["clean_acc"], abs=1e-9)
