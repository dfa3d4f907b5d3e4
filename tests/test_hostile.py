"""Hostile and careless inputs to every command and parser (issue 15).

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
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pytest

from robustedge.cli import main

MAX_LINES = 4  # click usage errors take up to 4 lines; our own errors take 1


class Evil:
    """Unpickling this runs a shell command that creates the PWNED marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Sandbox:
    def __init__(self, root: Path, capsys) -> None:
        self.root, self.capsys = root, capsys
        self.marker = root / "PWNED"

    def files(self) -> set:
        return {p for p in self.root.rglob("*") if p.is_file() or p.is_symlink()}

    def refuse(
        self, argv: Sequence[str], expect: Optional[str] = None, allowed: Iterable[Path] = ()
    ) -> str:
        """Run the CLI; assert a short non-zero failure and no stray files; return stderr."""
        before = self.files()
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        out, err = self.capsys.readouterr()
        code = exc.value.code
        assert code not in (0, None), f"exit {code}: {out}{err}"
        text = (out + err).strip()
        assert "Traceback" not in text, text
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert 1 <= len(lines) <= MAX_LINES and len(err) < 800, err
        assert "weights_only=False" not in text and "will likely succeed" not in text, text
        if expect is not None:
            assert expect.lower() in err.lower(), err
        new = self.files() - before
        allowed = [Path(a).resolve() for a in allowed]
        stray = [
            p for p in new if not any(p.resolve().is_relative_to(a) for a in allowed)
        ]  # a new file is only fine inside the folder the command was told to write to
        assert not stray, f"files written outside the run's folder: {stray}"
        assert not self.marker.exists(), "a hostile payload ran"
        return err


@pytest.fixture
def sb(tmp_path, capsys, monkeypatch) -> Sandbox:
    box = tmp_path / "sandbox"
    box.mkdir()
    monkeypatch.chdir(box)
    monkeypatch.delenv("ROBUSTEDGE_DATA_DIR", raising=False)
    return Sandbox(box, capsys)


@pytest.fixture
def run_copy(tiny_run, sb) -> Path:
    """A private copy of the session's tiny run folder, to be made hostile."""
    dst = sb.root / "run"
    shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns("export", "checkpoint"))
    return dst


def sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_export(run: Path, artifacts=None, eval_sets=None, eval_sha=None) -> Path:
    """RUN/export/ with a (dummy) onnx file, two eval sets and export.json naming them."""
    exp = run / "export"
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "model.onnx").unlink(missing_ok=True)  # never write through a planted symlink
    (exp / "model.onnx").write_bytes(b"not really onnx")
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.arange(4, dtype=np.int64)
    for name in ("eval_clean.npz", "eval_transfer.npz"):
        np.savez(exp / name, x=x, y=y)
    sets = {"clean": "eval_clean.npz", "transfer": "eval_transfer.npz"}
    doc = {
        "run": str(run),
        "data": "digits",
        "num_classes": 10,
        "input_shape_nchw": [1, 8, 8],
        "artifacts": artifacts
        if artifacts is not None
        else {"onnx": {"file": "model.onnx", "sha256": sha(exp / "model.onnx")}},
        "eval_sets": eval_sets if eval_sets is not None else sets,
        "eval_sha256": eval_sha
        if eval_sha is not None
        else {k: sha(exp / v) for k, v in sets.items()},
        "transfer_attack": {"attack": "pgd", "eps": 0.1},
    }
    (exp / "export.json").write_text(json.dumps(doc))
    return exp


@pytest.fixture(scope="session")
def good_bundle(tmp_path_factory) -> Path:
    """A real bundle built from a fabricated export (the builder does not parse the model)."""
    from robustedge.device.bundle import build_bundle

    root = tmp_path_factory.mktemp("bundle")
    fake_export(root / "run")
    return build_bundle(root / "run", root / "bundle")


@pytest.fixture
def bundle(good_bundle, sb) -> Path:
    dst = sb.root / "bundle"
    shutil.copytree(good_bundle, dst)
    return dst


def rewrite_manifest(bundle: Path, edit) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    head = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(">u1").tobytes()


def mnist_dir(root: Path, train_images: bytes) -> Path:
    d = root / "mnist"
    d.mkdir()
    ok_img = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    ok_lab = idx_bytes(np.zeros(2, np.uint8))
    (d / "train-images-idx3-ubyte").write_bytes(train_images)
    (d / "train-labels-idx1-ubyte").write_bytes(ok_lab)
    (d / "t10k-images-idx3-ubyte").write_bytes(ok_img)
    (d / "t10k-labels-idx1-ubyte").write_bytes(ok_lab)
    return d


TRAIN = ["train", "--epochs", "1", "--model", "tiny", "--adversary", "none", "--no-progress"]


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


# ---------------------------------------------------------------- recipes


def recipe(sb, text: str, name: str = "r.yaml") -> Path:
    path = sb.root / name
    path.write_text(text)
    return path


GOOD_HEAD = "name: x\ndata: digits\n"


@pytest.mark.parametrize(
    "body,line",
    [
        ('teacher: !!python/object/apply:os.system ["touch PWNED"]\n', 3),
        ("teacher: !!python/object:os.system {a: 1}\n", 3),
        ("teacher:\n  train: !!python/tuple [1, 2]\n", 4),
        ("teacher: {train: {epochs: 1}}\nexport: !!set {onnx: null}\n", 4),
        ("teacher: !custom 3\n", 3),
    ],
)
def test_recipe_non_core_yaml_tags_are_refused_with_file_and_line(sb, body, line):
    path = recipe(sb, GOOD_HEAD + body)
    sb.refuse(["run", path, "--check"], f"r.yaml:{line}: YAML tag")


def test_recipe_invalid_yaml_binary_and_bomb(sb):
    sb.refuse(["run", recipe(sb, "name: [unclosed\n"), "--check"], "r.yaml:")
    (sb.root / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    sb.refuse(["run", sb.root / "bin.yaml", "--check"])
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        prev = chr(ord("a") + i - 1)
        levels.append(
            f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [" + f"*{prev}, " * 9 + f"*{prev}]"
        )
    sb.refuse(["run", recipe(sb, "\n".join(levels) + "\n", "bomb.yaml"), "--check"], "alias")


def test_recipe_unknown_key_missing_file_and_folder(sb):
    sb.refuse(["run", recipe(sb, GOOD_HEAD + "teachr: {}\n"), "--check"], "r.yaml:3")
    sb.refuse(["run", sb.root / "missing.yaml", "--check"])
    (sb.root / "adir.yaml").mkdir()
    sb.refuse(["run", sb.root / "adir.yaml", "--check"])


def test_recipe_loading_a_teacher_that_is_not_a_run(sb):
    path = recipe(sb, GOOD_HEAD + "teacher: {load: /etc}\n")
    out = sb.root / "out"
    sb.refuse(["run", path, "--out", out], None, [out])


# ---------------------------------------------------------------- run folders -> bundles


@pytest.mark.parametrize(
    "file,with_hash",
    [
        ("../../../../../../../../etc/passwd", False),
        ("../../../../../../../../etc/passwd", True),
        ("/etc/passwd", True),
        ("sub/../../config.yaml", True),
    ],
)
def test_export_json_artifact_outside_the_export_folder_is_refused(sb, run_copy, file, with_hash):
    art = {"file": file}
    if with_hash:
        art["sha256"] = sha(Path("/etc/passwd"))
    fake_export(run_copy, artifacts={"onnx": art})
    out = sb.root / "b"
    sb.refuse(["bundle", run_copy, "--out", out], "refused")
    assert not out.exists()


@pytest.fixture
def outside_file(tmp_path) -> Path:
    """A file outside every run folder and bundle that symlinks point at (never a system
    file: a regression that wrote through a planted link must not damage the machine)."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text("a file outside the run folder\n")
    return path


def test_export_json_artifact_symlink_leading_out_is_refused(sb, run_copy, outside_file):
    exp = fake_export(run_copy)
    art = {"file": "model.onnx", "sha256": sha(outside_file)}
    fake_export(run_copy, artifacts={"onnx": art})
    (exp / "model.onnx").unlink()
    (exp / "model.onnx").symlink_to(outside_file)
    sb.refuse(["bundle", run_copy, "--out", sb.root / "b"], "outside")


def test_export_json_without_hash_or_with_wrong_hash_is_refused(sb, run_copy):
    fake_export(run_copy, artifacts={"onnx": {"file": "model.onnx"}})
    sb.refuse(["bundle", run_copy, "--out", sb.root / "b"], "sha256")
    fake_export(run_copy, artifacts={"onnx": {"file": "model.onnx", "sha256": "0" * 64}})
    sb.refuse(["bundle", run_copy, "--out", sb.root / "b"], "sha256")


def test_export_json_eval_set_outside_is_refused(sb, run_copy):
    fake_export(
        run_copy,
        eval_sets={"clean": "../../../../../../etc/passwd"},
        eval_sha={"clean": sha(Path("/etc/passwd"))},
    )
    sb.refuse(["bundle", run_copy, "--out", sb.root / "b"], "refused")


@pytest.mark.parametrize("content", ["[]", '{"artifacts": []}', "{bad", '{"artifacts": {}}'])
def test_corrupt_export_json(sb, run_copy, content):
    fake_export(run_copy)
    (run_copy / "export" / "export.json").write_text(content)
    sb.refuse(["bundle", run_copy, "--out", sb.root / "b"])


def test_bundle_over_a_folder_that_is_not_a_bundle(sb, run_copy):
    fake_export(run_copy)
    keep = sb.root / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    sb.refuse(["bundle", run_copy, "--out", keep], "not a bundle")
    assert (keep / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- bundles and manifests


def test_bench_on_a_file_is_one_line(sb):
    (sb.root / "f").write_text("x")
    sb.refuse(["bench", "--bundle", sb.root / "f", "--out", sb.root / "o.json"], "not a bundle")


def test_bench_tampered_model(sb, bundle):
    stored = json.loads((bundle / "manifest.json").read_text())["formats"]["onnx"]["file"]
    (bundle / stored).write_bytes(b"tampered!")  # the stored (compressed) model file
    sb.refuse(["bench", "--bundle", bundle, "--out", sb.root / "o.json"], "tampered")


def test_bench_manifest_path_outside(sb, bundle):
    outside = sb.root / "secret.txt"
    outside.write_text("secret")

    def edit(m):
        m["files"]["../secret.txt"] = {"sha256": sha(outside), "bytes": 6}

    rewrite_manifest(bundle, edit)
    sb.refuse(["bench", "--bundle", bundle, "--out", sb.root / "o.json"], "outside")


def test_bench_manifest_format_file_not_listed(sb, bundle):
    (bundle / "models" / "other.onnx").write_bytes(b"x")
    rewrite_manifest(bundle, lambda m: m["formats"]["onnx"].update(file="models/other.onnx"))
    sb.refuse(["bench", "--bundle", bundle, "--out", sb.root / "o.json"], "does not list")


def test_bench_bundle_with_unlisted_code(sb, bundle):
    (bundle / "lib" / "robustedge" / "device" / "sitecustomize.py").write_text(
        f"import os; os.system('touch {sb.marker}')\n"
    )
    sb.refuse(["bench", "--bundle", bundle, "--out", sb.root / "o.json"], "code")


def test_bench_bundle_with_symlink(sb, bundle, outside_file):
    (bundle / "data" / "eval_clean.npz").unlink()
    (bundle / "data" / "eval_clean.npz").symlink_to(outside_file)
    sb.refuse(["bench", "--bundle", bundle, "--out", sb.root / "o.json"])


@pytest.mark.parametrize("content", ["{bad", "[]", '{"schema": "robustedge.bundle/1"}'])
def test_bench_corrupt_manifest(sb, bundle, content):
    (bundle / "manifest.json").write_text(content)
    sb.refuse(["bench", "--bundle", bundle, "--out", sb.root / "o.json"], "bundle")


def make_tar(path: Path, members) -> Path:
    import io

    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_deploy_tar_with_parent_member(sb):
    info = tarfile.TarInfo("b/../../escaped.txt")
    info.size = 3
    tar = make_tar(sb.root / "evil.tar", [(info, b"abc")])
    sb.refuse(["deploy", tar, "--target", "./board"], "unsafe")
    assert not (sb.root.parent / "escaped.txt").exists()


def test_deploy_tar_with_symlink_member(sb):
    info = tarfile.TarInfo("b/link")
    info.type, info.linkname = tarfile.SYMTYPE, "/nonexistent/outside"
    tar = make_tar(sb.root / "evil.tar", [(info, None)])
    sb.refuse(["deploy", tar, "--target", "./board"], "unsafe")


def test_deploy_garbage_tar(sb):
    (sb.root / "junk.tar").write_bytes(b"\x00junk" * 100)
    sb.refuse(["deploy", sb.root / "junk.tar", "--target", "./board"], "bundle")


# ---------------------------------------------------------------- target strings


@pytest.mark.parametrize(
    "target,expect",
    [
        ("ssh://-oproxycommand=touch PWNED", "unsafe"),
        ("ssh://-oProxyCommand=sh@host", "unsafe"),
        ("ssh://", "bad ssh target"),
        ("qemu-sparc", "unknown target"),
        ("ftp://host", "unknown target"),
    ],
)
def test_bad_target_strings(sb, bundle, target, expect):
    sb.refuse(["deploy", bundle, "--target", target], expect)


# ---------------------------------------------------------------- output paths and options


def test_train_out_is_an_existing_file(sb):
    (sb.root / "f").write_text("keep")
    sb.refuse([*TRAIN, "--out", sb.root / "f"], "not a folder")
    assert (sb.root / "f").read_text() == "keep"


def test_train_out_non_empty_without_resume(sb):
    (sb.root / "d").mkdir()
    (sb.root / "d" / "mine.txt").write_text("keep")
    sb.refuse([*TRAIN, "--out", sb.root / "d"], "not empty")


def test_report_out_is_a_folder(sb, run_copy):
    sb.refuse(["report", run_copy, "--out", sb.root])


def test_report_summary_paths_leading_out_are_refused(sb, tiny_run):
    rec = sb.root / "rec"
    rec.mkdir()
    (rec / "summary.json").write_text(
        json.dumps({"runs": [{"name": "x", "path": str(tiny_run), "role": "teacher"}]})
    )
    sb.refuse(["report", rec, "--out", sb.root / "rep" / "r.html"], None, [sb.root / "rep"])


@pytest.mark.parametrize(
    "args",
    [
        ["--model-arg", "nokey"],
        ["--eps", "-1"],
        ["--epochs", "0"],
        ["--model", "os:system"],
        ["--data", "no-such-data"],
        ["--adversary", "nope"],
    ],
)
def test_bad_train_options(sb, args):
    out = sb.root / "r"
    sb.refuse([*TRAIN, *args, "--out", out], None, [out])


# ---------------------------------------------------------------- through a fresh interpreter


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--bundle", "FILE"],
        ["run", "EVIL_RECIPE", "--check"],
        ["train", "--resume", "--epochs", "1", "--out", "EVIL_RUN"],
    ],
)
def test_subprocess_no_traceback(tmp_path, argv):
    import torch

    marker = tmp_path / "PWNED"
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "EVIL_RECIPE").write_text('name: !!python/object/apply:os.system ["touch PWNED"]\n')
    (tmp_path / "EVIL_RUN" / "checkpoint").mkdir(parents=True)
    torch.save({"x": Evil(marker)}, tmp_path / "EVIL_RUN" / "checkpoint" / "last.pt")
    proc = subprocess.run(
        [sys.executable, "-m", "robustedge.cli", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") <= MAX_LINES, proc.stderr
    assert "weights_only=False" not in proc.stderr
    assert not marker.exists()


# ---------------------------------------------------------------- board responses


@pytest.mark.parametrize("answer", ["[1, 2]", '{"board": 3}', "{}", "not json"])
def test_malformed_board_results_are_one_line(sb, bundle, answer):
    """A 'board' (here a fake interpreter behind --python) answering garbage: one line."""
    fake = sb.root / "fake-python"
    fake.write_text(
        "#!/bin/sh\n"
        'while [ "$#" -gt 0 ]; do [ "$1" = --out ] && out="$2"; shift; done\n'
        f"printf '%s' '{answer}' > \"$out\"\n"
    )
    fake.chmod(0o755)
    out = sb.root / "res"
    sb.refuse(
        ["bench", "--bundle", bundle, "--python", fake, "--out", out / "r.json"],
        None,
        [out, bundle],
    )
