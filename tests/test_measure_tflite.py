"""examples/measure_tflite.py and api.bundle_model: an existing .tflite file measured on the
user's own image folder on a board target (the host target here), without a robustedge run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.test_api_examples import image_folder, run_example

from robustedge import api
from robustedge.device.board.bundle_format import read_manifest
from robustedge.errors import RobustEdgeError

pytestmark = [pytest.mark.export, pytest.mark.slow]


def digit_folder(root: Path, digits, per_class: int = 3) -> Path:
    """The first test digits of each class as a user's image folder (8x8 grayscale PNGs,
    ROOT/{train,test}/<digit>/), the layout the example reads."""
    for split, x, y in (("train", digits.x_train, digits.y_train),
                        ("test", digits.x_test, digits.y_test)):  # fmt: skip
        for c in range(digits.num_classes):
            (root / split / str(c)).mkdir(parents=True)
            for i, img in enumerate(x[y == c][:per_class]):
                a = np.clip(np.rint(img.reshape(8, 8) * 255), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(root / split / str(c) / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def tflite(tmp_path_factory, device_export, digits):
    """The session's tiny int8 .tflite (``device_export``: the tiny CNN trained on digits),
    copied out alone (no run folder beside it, as a user's file would be), and digits written
    as the user's own image folder."""
    root = tmp_path_factory.mktemp("measure")
    images = digit_folder(root / "images", digits)
    model = root / "mine" / "model.tflite"
    model.parent.mkdir()
    export = json.loads((device_export / "export" / "export.json").read_text())
    shutil.copyfile(device_export / "export" / export["artifacts"]["tflite-int8"]["file"], model)
    return model, images, device_export


def test_example_prints_the_bench_results(tflite, tmp_path):
    model, images, _ = tflite
    mine = tmp_path / "model.tflite"
    shutil.copyfile(model, mine)
    out = run_example(
        "measure_tflite.py", "--model", str(mine), "--images", str(images),
        "--target", "local", "--samples", "12", "--eps", "0.05", "--square-queries", "10",
        "--json", str(tmp_path / "results.json"),
        cwd=tmp_path,
    )  # fmt: skip
    res = json.loads((tmp_path / "results.json").read_text())
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert lines["board"].endswith(", 12 images") and res["n_eval"]["clean"] == 12
    assert float(lines["clean"].split()[1]) == pytest.approx(res["accuracy"]["clean"], abs=1e-6)
    worst = res["worst_case"]
    assert float(lines["robust"].split()[1]) == pytest.approx(worst["acc"], abs=1e-6)
    # no source model: the board ran Square only, and says so
    assert json.loads(lines["attacks"].split(None, 1)[1]) == worst["attacks"]
    assert len(worst["attacks"]) == 1 and "Square" in worst["attacks"][0]
    assert [r["eps"] for r in res["robust"]] == [0.05]
    assert "transfer" not in res["accuracy"]
    assert worst["acc"] <= res["accuracy"]["clean"]


def test_bundle_model_with_a_source_model_adds_the_transfer_set(tflite, tmp_path):
    model, images, run = tflite
    source = api.load_run(run).model
    b = api.bundle_model(model, tmp_path / "b", "imagefolder", data_dir=str(images),
                         samples=10, seed=3, eps=0.05, source_model=source)  # fmt: skip
    m = read_manifest(b.path)
    assert b.formats == ["tflite-int8"] and set(m["eval_sets"]) == {"clean", "transfer"}
    assert m["transfer_attack"]["attack"] == "pgd" and m["transfer_attack"]["eps"] == 0.05
    assert m["square"]["eps"] == 0.05
    with np.load(b.path / m["eval_sets"]["clean"]) as f:
        x, y = f["x"], f["y"]
    assert x.shape == (10, 1, 8, 8)
    # the fixed seeded subset: the same draw again, another seed another draw
    again = api.bundle_model(model, tmp_path / "c", "imagefolder", data_dir=str(images),
                             samples=10, seed=3)  # fmt: skip
    with np.load(again.path / "data" / "eval_clean.npz") as f:
        assert np.array_equal(f["x"], x) and np.array_equal(f["y"], y)
    assert set(read_manifest(again.path)["eval_sets"]) == {"clean"}


def test_bundle_model_refuses_a_file_that_is_not_tflite_and_data_of_another_shape(tflite, tmp_path):
    model, images, _ = tflite
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(RobustEdgeError, match=r"model.onnx is not a .tflite file"):
        api.bundle_model(onnx, tmp_path / "b", "imagefolder", data_dir=str(images))
    other = image_folder(tmp_path / "big", n=2, size=16)
    with pytest.raises(RobustEdgeError, match=r"fits neither NCHW nor NHWC"):
        api.bundle_model(model, tmp_path / "b", "imagefolder", data_dir=str(other))
    assert not (tmp_path / "b").exists()
