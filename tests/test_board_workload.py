"""The board-sized workload: ResNet-8 on synthetic32 exports (ONNX, int8 TFLite) through the
existing path, parity gate included."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="needs the [export] extra (requirements/export.txt)")


@pytest.fixture(scope="module")
def resnet8_run(tmp_path_factory):
    """An untrained ResNet-8 run folder on synthetic32 (with non-trivial BN statistics)."""
    import torch

    from robustedge.io import write_yaml
    from robustedge.models import ModelSpec, build_model, save_model

    out = tmp_path_factory.mktemp("board") / "resnet8"
    torch.manual_seed(0)
    spec = ModelSpec("resnet8", (3, 32, 32), 10)
    model = build_model(spec)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    save_model(out, model.eval(), spec)
    write_yaml(out / "config.yaml", {"data": "synthetic32", "eps": 0.03})
    return out


@pytest.mark.slow
def test_resnet8_synthetic32_exports_through_onnx_and_int8_tflite(resnet8_run):
    from robustedge.export import ExportConfig, export_run
    from robustedge.export.runners import LiteRunner

    cfg = ExportConfig(
        formats="onnx,tflite-int8",
        calib_samples=64,
        transfer_steps=2,
        transfer_restarts=1,
        clean_margin=5.0,
        robust_margin=10.0,
    )
    report = export_run(resnet8_run, cfg)
    for fmt in ("onnx", "tflite-int8"):
        assert report.artifacts[fmt]["parity"]["passed"] is True, report.artifacts[fmt]
    lite = LiteRunner(report.path("tflite-int8"), (3, 32, 32))
    assert lite.input.layout == "NHWC" and lite.input.shape == [1, 32, 32, 3]
    assert lite.input.dtype == "int8"
    # int8 weights: the file holds about one byte per parameter (78,186) plus the container
    assert 78_000 < report.path("tflite-int8").stat().st_size < 140_000
    assert np.isfinite(lite.logits(np.zeros((1, 3, 32, 32), np.float32))).all()
