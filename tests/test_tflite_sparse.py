"""Sparse int8 TFLite: onnx2tf's SavedModel re-converted with EXPERIMENTAL_SPARSITY."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustedge.errors import RobustEdgeError

pytest.importorskip("ai_edge_litert", reason="needs the [export] extra (requirements/export.txt)")


@pytest.mark.slow
def test_sparse_int8_is_smaller_and_agrees_with_dense_int8(digits, tmp_path):
    from robustedge.compress.prox import topk_masks
    from robustedge.compress.targets import apply_masks, prunable_params
    from robustedge.export.onnx import INPUT_NAME, export_onnx
    from robustedge.export.runners import LiteRunner
    from robustedge.export.tflite import convert_tflite, convert_tflite_sparse
    from robustedge.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet5", digits.input_shape, 10)).eval()
    params = prunable_params(model)
    apply_masks(params, topk_masks({n: p.detach().abs() for n, p in params.items()}, 0.95))
    onnx = export_onnx(model, digits.input_shape, tmp_path / "m.onnx").path
    calib = digits.x_train[:64].transpose(0, 2, 3, 1)
    found = convert_tflite(onnx, tmp_path / "conv", INPUT_NAME, calib, saved_model=True)
    sparse = convert_tflite_sparse(found["saved_model"], tmp_path / "sparse.tflite", calib)
    dense_bytes, sparse_bytes = found["int8"].stat().st_size, sparse.stat().st_size
    assert sparse_bytes < 0.7 * dense_bytes  # measured 17,272 vs 31,944 B
    assert not list(tmp_path.glob("sparse.tflite.*"))  # no temporary left behind

    dense_rt, sparse_rt = (LiteRunner(p, digits.input_shape) for p in (found["int8"], sparse))
    assert sparse_rt.input.dtype == sparse_rt.output.dtype == "int8"  # full-integer, like int8
    assert sparse_rt.input.scale == pytest.approx(dense_rt.input.scale)
    x = digits.x_test[:100]
    a, b = dense_rt.logits(x), sparse_rt.logits(x)
    step = sparse_rt.output.scale
    assert np.abs(a - b).max() <= step + 1e-9  # at most one int8 step from the dense model
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(b - ref).max() <= 3 * step  # and within int8 tolerance of PyTorch


def test_sparse_needs_a_saved_model(tmp_path):
    from robustedge.export.tflite import convert_tflite_sparse

    with pytest.raises(RobustEdgeError, match="holds no SavedModel") as info:
        convert_tflite_sparse(tmp_path, tmp_path / "m.tflite", np.zeros((2, 8, 8, 1)))
    assert "\n" not in str(info.value)
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(RobustEdgeError, match="N x H x W x C"):
        convert_tflite_sparse(tmp_path, tmp_path / "m.tflite", np.zeros((8, 8, 1)))
