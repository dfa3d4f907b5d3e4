"""Hostile and careless inputs (issue 15): recipes, export folders, bundles and manifests.

The same sandbox and the same assertions as tests/test_hostile_inputs.py (tests/hostile_kit.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hostile_kit import (
    MAX_LINES,
    TRAIN,
    Evil,
    fake_export,
    rewrite_manifest,
    sha,
)


@pytest.fixture(scope="session")
def good_bundle(tmp_path_factory) -> Path:
    """A real bundle built from a fabricated export (the builder does not parse the model)."""
    from robustedge.device.host.bundle import build_bundle

    root = tmp_path_factory.mktemp("bundle")
    fake_export(root / "run")
    return build_bundle(root / "run", root / "bundle")


@pytest.fixture
def bundle(good_bundle, sb) -> Path:
    dst = sb.root / "bundle"
    shutil.copytree(good_bundle, dst)
    return dst


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
