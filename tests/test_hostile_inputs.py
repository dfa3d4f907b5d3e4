"""Hostile and careless inputs to every command and parser (issue 15): model files, run folders
and data files.

Each case runs the real `robustedge` command line (``robustedge.cli.main``, in process, with a
few through a fresh interpreter) inside a sandbox folder and asserts:

- a non-zero exit,
- a short error (at most a few lines, no traceback; torch's "weights_only=False" advice is
  never repeated),
- no file written outside the folder the command was told to write to (the run's own folder),
- nothing executed: every payload that could run code would create ``PWNED`` in the sandbox.
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from hostile_kit import (
    TRAIN,
    Evil,
    idx_bytes,
    mnist_dir,
)

# ---------------------------------------------------------------- model files and run folders


def test_resume_from_code_running_checkpoint_is_refused_in_one_line(sb):
    import torch

    out = sb.root / "r"
    (out / "checkpoint").mkdir(parents=True)
    torch.save({"epoch": 0, "x": Evil(sb.marker)}, out / "checkpoint" / "last.pt")
    err = sb.refuse([*TRAIN, "--out", out, "--resume"], "refused checkpoint", [out])
    assert "posix.system" in err and len(err.strip().splitlines()) == 1


def test_resume_from_garbage_checkpoint(sb):
    out = sb.root / "r"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "last.pt").write_bytes(b"\x80\x04garbage")
    sb.refuse([*TRAIN, "--out", out, "--resume"], "checkpoint", [out])


def test_model_json_naming_os_system_is_refused_before_import(sb, run_copy):
    meta = json.loads((run_copy / "model.json").read_text())
    meta["spec"]["name"] = "os:system"
    meta["spec"]["kwargs"] = {"command": f"touch {sb.marker}"}
    (run_copy / "model.json").write_text(json.dumps(meta))
    sb.refuse(["eval", run_copy, "--attack", "fgsm"], "standard library")


def test_model_json_with_dunder_factory_is_refused(sb, run_copy):
    meta = json.loads((run_copy / "model.json").read_text())
    meta["spec"]["name"] = "torch:__import__"
    (run_copy / "model.json").write_text(json.dumps(meta))
    sb.refuse(["eval", run_copy, "--attack", "fgsm"], "factory")


def test_model_json_with_huge_input_shape(sb, run_copy):
    meta = json.loads((run_copy / "model.json").read_text())
    meta["spec"]["input_shape"] = [3, 10**6, 10**6]
    (run_copy / "model.json").write_text(json.dumps(meta))
    sb.refuse(["eval", run_copy, "--attack", "fgsm"], "implausible")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"spec": 3}', "\xff\xfe"])
def test_corrupt_model_json(sb, run_copy, content):
    (run_copy / "model.json").write_bytes(content.encode("latin1"))
    sb.refuse(["eval", run_copy, "--attack", "fgsm"], "model.json")


def test_truncated_safetensors(sb, run_copy):
    w = run_copy / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    sb.refuse(["eval", run_copy, "--attack", "fgsm"], "weights")


def test_config_yaml_python_tag_on_scalar(sb, run_copy):
    text = (run_copy / "config.yaml").read_text()
    bad = f'data: !!python/object/apply:os.system ["touch {sb.marker}"]\n'
    (run_copy / "config.yaml").write_text(bad + text.replace("data:", "old_data:", 1))
    sb.refuse(["eval", run_copy, "--attack", "fgsm"], "config.yaml:1: YAML tag")


def test_config_yaml_python_tag_on_mapping(sb, run_copy):
    text = (run_copy / "config.yaml").read_text()
    bad = "extra: !!python/object:robustedge.config.Evil {a: 1}\n"
    (run_copy / "config.yaml").write_text(text + bad)
    line = len(text.splitlines()) + 1
    sb.refuse(["eval", run_copy, "--attack", "fgsm"], f"config.yaml:{line}: YAML tag")


def test_eval_of_missing_run_and_of_a_file(sb):
    sb.refuse(["eval", sb.root / "nope", "--attack", "fgsm"])
    (sb.root / "afile").write_text("x")
    sb.refuse(["eval", sb.root / "afile", "--attack", "fgsm"])


def test_compress_from_hostile_teacher(sb, run_copy):
    (run_copy / "config.yaml").write_text("data: !!python/name:os.system\n")
    out = sb.root / "student"
    sb.refuse(["compress", "--teacher", run_copy, "--epochs", "1", "--out", out], "YAML tag", [out])


def test_export_of_a_folder_that_is_not_a_run(sb):
    (sb.root / "empty").mkdir()
    sb.refuse(["export", sb.root / "empty", "--formats", "onnx"])


# ---------------------------------------------------------------- data files


def test_idx_truncated(sb):
    d = mnist_dir(sb.root, idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-10])
    out = sb.root / "r"
    sb.refuse([*TRAIN, "--data", "mnist", "--data-dir", d, "--out", out], "truncated", [out])


def test_idx_bad_magic_and_too_many_dims(sb):
    out = sb.root / "r"
    d = mnist_dir(sb.root, b"\x01\x02\x08\x03" + b"\x00" * 64)
    sb.refuse([*TRAIN, "--data", "mnist", "--data-dir", d, "--out", out], "magic", [out])
    shutil.rmtree(d)
    d = mnist_dir(sb.root, struct.pack(">HBB", 0, 8, 200) + b"\x00\x00\x00\x01" * 200)
    sb.refuse([*TRAIN, "--data", "mnist", "--data-dir", d, "--out", out], "magic", [out])


def test_idx_bad_gzip(sb):
    out = sb.root / "r"
    d = mnist_dir(sb.root, b"")
    (d / "train-images-idx3-ubyte").unlink()
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x" * 100)[:20])
    sb.refuse([*TRAIN, "--data", "mnist", "--data-dir", d, "--out", out], "gzip", [out])


def cifar_dir(root: Path, payload: bytes) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir()
    for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (d / n).write_bytes(payload)
    return d


def test_cifar_batch_that_runs_code_is_refused(sb):
    out = sb.root / "r"
    d = cifar_dir(sb.root, pickle.dumps({"data": Evil(sb.marker), "labels": [0]}))
    sb.refuse([*TRAIN, "--data", "cifar10", "--data-dir", d, "--out", out], "not allowed", [out])


def test_cifar_tarball_with_evil_batch(sb):
    out = sb.root / "r"
    src = cifar_dir(sb.root, pickle.dumps(Evil(sb.marker)))
    with tarfile.open(sb.root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    shutil.rmtree(src)
    sb.refuse([*TRAIN, "--data", "cifar10", "--data-dir", sb.root, "--out", out], "cifar", [out])


def test_cifar_garbage_batch(sb):
    out = sb.root / "r"
    d = cifar_dir(sb.root, b"\x80\x05garbage-not-a-pickle")
    sb.refuse([*TRAIN, "--data", "cifar10", "--data-dir", d, "--out", out], "cifar", [out])


def npz_train(sb, name="d.npz", **arrays) -> str:
    out = sb.root / "r"
    path = sb.root / name
    np.savez(path, **arrays)
    return sb.refuse([*TRAIN, "--data", "npz", "--data-dir", path, "--out", out], None, [out])


def test_npz_labels_leaving_classes_empty_are_refused_saying_what_was_inferred(sb):
    y = np.arange(50) % 5
    y[y == 4] = 99  # classes 4..98 have no sample
    err = npz_train(sb, x=np.zeros((50, 8, 8), np.uint8), y=y)
    assert "100 classes inferred" in err and "num_classes" in err


def test_npz_pickled_object_array_is_refused(sb):
    obj = np.empty(3, dtype=object)
    obj[:] = [Evil(sb.marker), 1, 2]
    path = sb.root / "o.npz"
    np.savez(path, x=obj, y=np.zeros(3, np.int64))
    out = sb.root / "r"
    sb.refuse([*TRAIN, "--data", "npz", "--data-dir", path, "--out", out], "pickle", [out])


def test_npz_nan_images(sb):
    x = np.full((10, 1, 8, 8), np.nan, np.float32)
    assert "nan" in npz_train(sb, x=x, y=np.arange(10) % 2).lower()


def test_npz_float_out_of_range(sb):
    x = np.full((10, 1, 8, 8), 3.0, np.float32)
    assert "[0, 1]" in npz_train(sb, x=x, y=np.arange(10) % 2)


def test_npz_not_a_zip(sb):
    (sb.root / "f.npz").write_bytes(b"PK\x03\x04 garbage")
    out = sb.root / "r"
    sb.refuse([*TRAIN, "--data", "npz", "--data-dir", sb.root / "f.npz", "--out", out], "npz")


def test_data_dir_missing(sb):
    out = sb.root / "r"
    sb.refuse([*TRAIN, "--data", "mnist", "--data-dir", sb.root / "nope", "--out", out], "exist")
