"""Export round trips (ONNX, TFLite float32/int8, ONNX int8), parity gate, layout, ledger.

One module-scoped export per model keeps the time down (onnx2tf takes ~10 s a conversion).
The residual/depthwise model is defined here and reached through the ``module:factory``
route of ModelSpec (it is not added to the model registry).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest

from conftest import skip_unless_installed

skip_unless_installed(
    "onnx2tf", "ai_edge_litert", reason="needs the [export] extra (requirements/export.txt)"
)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from robustedge.errors import RobustEdgeError  # noqa: E402
from robustedge.export import ExportConfig  # noqa: E402

pytestmark = pytest.mark.export
FAST = ExportConfig(transfer_steps=5, transfer_restarts=1)


class ResDW(nn.Module):
    """Conv stem, depthwise 3x3 (groups=C) + pointwise with a residual add, linear head."""

    def __init__(self, input_shape: Tuple[int, int, int], num_classes: int, width: int = 12):
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.dw = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 1),
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.head(h + self.dw(h))


def resdw(input_shape, num_classes, width: int = 12) -> nn.Module:
    return ResDW(input_shape, num_classes, width)


def _three_channel_npz(path: Path) -> Path:
    """Digits as 3 different channels (image, mirrored image, half image), NCHW in [0,1]."""
    from robustedge.data import load_dataset

    d = load_dataset("digits")

    def three(x):
        return np.concatenate([x, x[..., ::-1], 0.5 * x], axis=1).astype(np.float32)

    np.savez(
        path, x_train=three(d.x_train), y_train=d.y_train, x_test=three(d.x_test), y_test=d.y_test
    )
    return path


def _train_run(out: Path, prune: float) -> Path:
    """Train ResDW on the 3-channel digits, zero the smallest ``prune`` of its weights."""
    from robustedge.data import load_dataset
    from robustedge.io import write_yaml
    from robustedge.models import ModelSpec, build_model, save_model

    out.mkdir(parents=True)
    npz = _three_channel_npz(out.parent / "digits3.npz")
    data = load_dataset("npz", str(npz))
    spec = ModelSpec(f"{__name__}:resdw", data.input_shape, data.num_classes)
    torch.manual_seed(0)
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    for _ in range(12):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                w[w.abs() <= w.abs().flatten().quantile(prune)] = 0.0
    save_model(out, model.eval(), spec)
    write_yaml(out / "config.yaml", {"data": "npz", "data_dir": str(npz), "eps": 0.05})
    return out


@pytest.fixture(scope="module")
def tiny_export(tiny_run, tmp_path_factory):
    from robustedge.export import export_run

    out = tmp_path_factory.mktemp("exp") / "export"
    cfg = FAST.replace(
        formats="onnx,onnx-int8,tflite-float32,tflite-int8",
        calib_samples=100,
        calib_adv_fraction=0.25,
    )
    return export_run(tiny_run, cfg, out=out)


@pytest.fixture(scope="module")
def resdw_export(tmp_path_factory):
    from robustedge.export import export_run

    run = _train_run(tmp_path_factory.mktemp("resdw") / "run", prune=0.6)
    cfg = FAST.replace(formats="onnx,tflite-int8", clean_margin=5.0, robust_margin=10.0)
    return export_run(run, cfg)


def test_export_json_contract(tiny_export):
    m = json.loads((tiny_export.out / "export.json").read_text())
    assert m["data"] == "digits" and m["num_classes"] == 10 and m["input_shape_nchw"] == [1, 8, 8]
    assert set(m["artifacts"]) == {"onnx", "onnx-int8", "tflite-float32", "tflite-int8"}
    assert m["onnx_export"]["exporter"] in ("dynamo", "torchscript")
    assert m["calibration"]["samples"] == 100 and m["calibration"]["adv_fraction"] == 0.25
    for fmt, a in m["artifacts"].items():
        path = tiny_export.out / a["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == a["sha256"]
        assert path.stat().st_size == a["bytes"]
        assert a["parity"]["passed"] is True, (fmt, a["parity"])
        assert {"name", "shape", "dtype", "scale", "zero_point"} <= set(a["input"])
    q = m["artifacts"]["tflite-int8"]
    assert q["input"]["dtype"] == q["output"]["dtype"] == "int8"
    assert q["input"]["layout"] == "NHWC" and q["input"]["shape"] == [1, 8, 8, 1]
    assert q["input"]["scale"] > 0 and -128 <= q["input"]["zero_point"] <= 127
    assert q["output"]["shape"] == [1, 10] and q["output"]["scale"] > 0
    assert m["artifacts"]["onnx"]["parity"]["max_abs_logit_diff"] < 1e-4 * max(
        1.0, m["artifacts"]["onnx"]["parity"]["logit_scale"]
    )
    t = np.load(tiny_export.out / m["eval_sets"]["transfer"])
    c = np.load(tiny_export.out / m["eval_sets"]["clean"])
    assert t["x"].shape == c["x"].shape and t["x"].dtype == np.float32 and t["y"].dtype == np.int64
    assert np.abs(t["x"] - c["x"]).max() <= m["transfer_attack"]["eps"] + 1e-6
    assert json.loads(str(t["attack"]))["attack"] == "pgd" and float(t["eps"]) > 0
    assert not list(tiny_export.out.parent.glob(".export.*")), "staging folder left behind"


def test_int8_interpreter_matches_recorded_quantization(tiny_export):
    """Feed the int8 model by hand from export.json alone, as a board would."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    m = tiny_export.manifest
    a = m["artifacts"]["tflite-int8"]
    x, y = (
        np.load(tiny_export.out / "eval_clean.npz")["x"],
        np.load(tiny_export.out / "eval_clean.npz")["y"],
    )
    # the reference kernels, as the parity gate runs them: the accuracy must be the recorded one
    it = Interpreter(
        model_path=str(tiny_export.out / a["file"]),
        experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
    )
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    s, z = a["input"]["scale"], a["input"]["zero_point"]
    preds = []
    for xi in x:
        q = np.clip(np.round(xi.transpose(1, 2, 0)[None] / s + z), -128, 127).astype(np.int8)
        it.set_tensor(i["index"], q)
        it.invoke()
        preds.append(it.get_tensor(o["index"]).argmax())
    acc = float((np.array(preds) == y).mean())
    assert acc == a["parity"]["clean_acc"] and a["parity"]["n"] == len(y)


def test_ledger_fields_consistent(tiny_export):
    led = json.loads((tiny_export.out / "ledger.json").read_text())
    stages = led["stages"]
    assert stages[0]["stage"].startswith("PyTorch") and len(stages) == 5
    for r in stages:
        assert {"params", "nonzeros", "macs", "bytes", "gzip_bytes"} <= set(r)
        assert 0 < r["nonzeros"] <= r["params"] and r["macs"] == stages[0]["macs"] > 0
    assert led["verdict"].startswith("dense")
    assert "int8_weight_zeros" in stages[-2] or "int8_weight_zeros" in stages[-1]


def test_macs_count_groups_and_linear():
    from robustedge.models import count_macs

    m = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Flatten(), nn.Linear(64, 3))
    assert count_macs(m, (4, 4, 4))["dense"] == 4 * 16 * 9 + 64 * 3


def test_residual_depthwise_three_channels(resdw_export):
    """C=3 input: NCHW -> NHWC handled; int8 predictions agree with PyTorch; zeros survive."""
    a = resdw_export.artifacts["tflite-int8"]
    assert a["input"]["layout"] == "NHWC" and a["input"]["shape"] == [1, 8, 8, 3]
    assert a["parity"]["agreement_clean"] >= 0.9 and a["parity"]["passed"]
    assert resdw_export.artifacts["onnx"]["parity"]["agreement_clean"] == 1.0
    led = resdw_export.ledger
    assert led["verdict"].startswith("zeros only")
    torch_row, int8_row = led["stages"][0], led["stages"][-1]
    assert torch_row["weight_zeros"] >= 0.5 * torch_row["weight_count"]
    assert int8_row["zeros_survived"] and int8_row["int8_weight_zeros"] >= torch_row["weight_zeros"]
    assert int8_row["gzip_bytes"] <= int8_row["bytes"]
    assert torch_row["gzip_bytes"] <= torch_row["bytes"]


def test_parity_gate_catches_bad_calibration(tiny_run, tmp_path):
    from robustedge.data import load_dataset
    from robustedge.export import export_run

    x = load_dataset("digits").x_train[:64] * 20.0  # wrong range: inputs are [0, 1]
    out = tmp_path / "export"
    with pytest.raises(RobustEdgeError, match=r"parity gate failed for tflite-int8: clean"):
        export_run(tiny_run, FAST.replace(formats="onnx,tflite-int8"), out=out, calib_x=x)
    assert not out.exists(), "a failed export must not leave RUN/export behind"
    failed = tmp_path / "export.failed"
    assert "parity gate failed" in json.loads((failed / "failure.json").read_text())["error"]
    assert not list(tmp_path.glob(".export.*"))


def test_corrupt_and_mismatched_runs(tiny_run, tmp_path):
    import shutil

    from robustedge.export import export_run

    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    (bad / "model.safetensors").write_bytes(b"not a model")
    onnx = ExportConfig(formats="onnx")
    with pytest.raises(RobustEdgeError, match="corrupt weights file"):
        export_run(bad, onnx)
    shutil.copy2(tiny_run / "model.safetensors", bad / "model.safetensors")
    meta = json.loads((bad / "model.json").read_text())
    meta["spec"]["kwargs"] = {"width": 4}
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(RobustEdgeError, match="do not match the architecture"):
        export_run(bad, onnx)
    with pytest.raises(ValueError, match="unknown export format 'tflite-int4'"):
        export_run(tiny_run, ExportConfig(formats="onnx,tflite-int4"))
    with pytest.raises(TypeError, match="export_run takes an ExportConfig, got str"):
        export_run(tiny_run, "onnx")
    assert not (bad / "export").exists() and not (bad / "export.failed").exists()


def test_corrupt_artifact_and_converter_messages(tmp_path):
    from robustedge.export.runners import LiteRunner, OrtRunner
    from robustedge.export.tflite import describe_failure

    junk = tmp_path / "m.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(RobustEdgeError, match="cannot load"):
        LiteRunner(junk, (1, 8, 8))
    with pytest.raises(RobustEdgeError, match="cannot load"):
        OrtRunner(junk)
    log = "INFO: x\nERROR: The trace log is below.\nValueError: bad axis\nERROR: onnx_op_name: /Foo"
    assert describe_failure(log) == "op /Foo; last error: ValueError: bad axis"


def test_cli_export_onnx_and_error(tiny_run, tmp_path, cli):
    out = tmp_path / "e"
    r = cli(
        "export",
        str(tiny_run),
        "--formats",
        "onnx",
        "--out",
        str(out),
        "--transfer-steps",
        "2",
        "--transfer-restarts",
        "1",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "onnx" in r.stdout and "sparsity:" in r.stdout and (out / "export.json").is_file()
    r = cli("export", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "run folder not found" in r.stderr


def test_converter_failure_names_stage_and_op(tiny_run, tmp_path, monkeypatch):
    """A converter crash: one line naming the stage and the op, no half export, log kept.
    The converter runs in $ROBUSTEDGE_CONVERTER_PYTHON (here a script that fails as onnx2tf
    does)."""
    from robustedge.export import export_run
    from robustedge.export.tflite import CONVERTER_PYTHON_ENV

    fake = tmp_path / "fake_python"
    fake.write_text(
        "#!/bin/sh\necho 'ERROR: The trace log is below.'\n"
        "echo 'NotImplementedError: op GridSample is not supported'\n"
        "echo 'ERROR: onnx_op_name: /features/GridSample_3'\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv(CONVERTER_PYTHON_ENV, str(fake))
    out = tmp_path / "export"
    with pytest.raises(RobustEdgeError) as info:
        export_run(tiny_run, FAST.replace(formats="onnx,tflite-float32", parity=False), out=out)
    msg = str(info.value)
    assert "\n" not in msg and "TFLite conversion (onnx2tf) failed" in msg
    assert "op /features/GridSample_3" in msg and "GridSample is not supported" in msg
    assert not out.exists() and not list(tmp_path.glob(".export.*"))
    assert "GridSample" in (tmp_path / "export.failed" / "onnx2tf.log").read_text()


def test_onnx_fallback_is_recorded(tmp_path, monkeypatch):
    """When the dynamo exporter fails, the TorchScript exporter is used and the reason kept."""
    import robustedge.export.onnx as onnx_export
    from robustedge.export.runners import OrtRunner
    from robustedge.models import ModelSpec, build_model

    model = build_model(ModelSpec(f"{__name__}:resdw", (3, 8, 8), 10)).eval()
    real = onnx_export._export

    def dynamo_fails(m, x, path, dynamo):
        if dynamo:
            raise RuntimeError("unsupported FX node")
        return real(m, x, path, dynamo)

    monkeypatch.setattr(onnx_export, "_export", dynamo_fails)
    res = onnx_export.export_onnx(model, (3, 8, 8), tmp_path / "m.onnx")
    assert res.exporter == "torchscript" and "unsupported FX node" in res.fallback_reason
    x = np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.as_tensor(x)).numpy()
    assert np.abs(OrtRunner(res.path).logits(x) - ref).max() < 1e-4
