"""Exact-value unit tests of the bundle format, to kill mutmut's mutants (issue 16; the rule is in
tests/test_exact_attacks.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# -------------------------------------------------------------------- device/bundle_format


def manifest_of(b: Path) -> dict:
    return json.loads((b / "manifest.json").read_text())


def _write(b: Path, manifest: dict) -> None:
    (b / "manifest.json").write_text(json.dumps(manifest))


def test_bundle_format_constants():
    from robustedge.device.board import bundle_format as bf

    assert (bf.MANIFEST, bf.SCHEMA, bf.ENTRY, bf.SQUARE) == (
        "manifest.json",
        "robustedge.bundle/1",
        "run_bundle.py",
        "square_core.py",
    )
    assert bf.CODE_SUFFIXES == (".py", ".pyc", ".pyo", ".pyd", ".so", ".pth")


def test_read_manifest_errors(tmp_path, bundle):
    from robustedge.device.board.bundle_format import BundleError, read_manifest

    assert read_manifest(bundle)["schema"] == "robustedge.bundle/1"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BundleError, match=f"not a bundle: {f} is a file"):
        read_manifest(f)
    with pytest.raises(BundleError, match="not a bundle: .*manifest.json is missing"):
        read_manifest(tmp_path / "nothing")
    d = tmp_path / "d"
    d.mkdir()
    (d / "manifest.json").write_text("{ nope")
    with pytest.raises(BundleError, match="corrupt bundle manifest"):
        read_manifest(d)
    (d / "manifest.json").write_bytes(b"\xff\xfe")
    with pytest.raises(BundleError, match="corrupt bundle manifest"):
        read_manifest(d)
    (d / "manifest.json").write_text("[" * 100_000)
    with pytest.raises(BundleError, match="corrupt bundle manifest"):
        read_manifest(d)
    for text in ("[1]", '{"schema": "other/1"}', "{}"):
        (d / "manifest.json").write_text(text)
        with pytest.raises(BundleError, match="is not a robustedge.bundle/1 manifest"):
            read_manifest(d)
    (d / "manifest.json").unlink()
    (d / "manifest.json").mkdir()
    with pytest.raises(BundleError, match="cannot read bundle manifest"):
        read_manifest(d)


@pytest.mark.parametrize(
    "rel,msg",
    [
        (1, "names a bad path: 1"),
        ("", "names a bad path: ''"),
        ("a\x00b", "names a bad path"),
        ("a\\b", "names a bad path"),
        ("/etc/passwd", "names a path outside the bundle: /etc/passwd"),
        ("../x", "names a path outside the bundle: ../x"),
        ("data/../../x", "outside the bundle"),
        (".", "outside the bundle: ."),
    ],
)
def test_inside_refuses(tmp_path, rel, msg):
    from robustedge.device.board.bundle_format import BundleError, inside

    with pytest.raises(BundleError, match=msg.replace("\\", "\\\\")):
        inside(tmp_path, rel)


def test_inside_accepts_and_refuses_symlinks(tmp_path):
    from robustedge.device.board.bundle_format import BundleError, inside

    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    assert inside(root, "data/x.npz") == root / "data" / "x.npz"
    assert inside(root, "a..b") == root / "a..b"
    (tmp_path / "rootother").mkdir()
    (root / "out").symlink_to(tmp_path / "rootother")  # a sibling sharing the prefix
    with pytest.raises(BundleError, match="outside the bundle: out/f"):
        inside(root, "out/f")
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(BundleError, match="outside the bundle: loop"):
        inside(root, "loop")


def test_verify_bundle_refusals(bundle):
    from robustedge.device.board.bundle_format import BundleError, verify_bundle

    good = manifest_of(bundle)
    assert verify_bundle(bundle) == good
    for files in ({}, [], None, "x"):
        _write(bundle, {**good, "files": files})
        with pytest.raises(BundleError, match="lists no files"):
            verify_bundle(bundle)
    _write(bundle, {**good, "files": {**good["files"], "data/eval_clean.npz": "abc"}})
    with pytest.raises(BundleError, match="entry for data/eval_clean.npz is not a mapping"):
        verify_bundle(bundle)
    _write(bundle, {**good, "files": {**good["files"], "lib": {"sha256": "0", "bytes": 0}}})
    with pytest.raises(BundleError, match="incomplete bundle: lib is missing"):
        verify_bundle(bundle)
    entry = good["files"]["square_core.py"]
    _write(bundle, {**good, "files": {**good["files"], "square_core.py": {**entry, "bytes": 1}}})
    with pytest.raises(BundleError, match="square_core.py has .* bytes, manifest says 1"):
        verify_bundle(bundle)
    no_bytes = {"sha256": entry["sha256"]}
    _write(bundle, {**good, "files": {**good["files"], "square_core.py": no_bytes}})
    with pytest.raises(BundleError, match="manifest says None"):
        verify_bundle(bundle)
    _write(bundle, good)
    verify_bundle(bundle)
    link = bundle / "models" / "link.tflite"
    link.symlink_to(bundle / good["formats"]["tflite-int8"]["file"])
    with pytest.raises(BundleError, match="bundle holds a symbolic link: models/link.tflite"):
        verify_bundle(bundle)
    link.unlink()
    listed_link = dict(good["files"], **{"models/l": entry})
    link = bundle / "models" / "l"
    link.symlink_to(bundle / "square_core.py")
    _write(bundle, {**good, "files": listed_link})
    with pytest.raises(BundleError, match="incomplete bundle: models/l is missing"):
        verify_bundle(bundle)
    link.unlink()
    _write(bundle, good)
    for extra in ("lib/robustedge/evil.py", "x.so", "data/sitecustomize.pth", "a.pyc"):
        (bundle / extra).write_text("")
        with pytest.raises(BundleError, match=f"holds code the manifest does not list: {extra}"):
            verify_bundle(bundle)
        (bundle / extra).unlink()
    (bundle / "notes.txt").write_text("unlisted data is fine")
    assert verify_bundle(bundle) == good


def test_verify_bundle_requires_referenced_files_listed(bundle):
    from robustedge.device.board.bundle_format import BundleError, referenced_files, verify_bundle

    good = manifest_of(bundle)
    model = good["formats"]["tflite-int8"]["file"]
    assert model.startswith("models/model_int8.tflite")
    assert referenced_files(good) == [
        model,
        "data/eval_clean.npz",
        "data/eval_transfer.npz",
        "square_core.py",
    ]
    assert referenced_files({**good, "square": None})[-1] == "data/eval_transfer.npz"
    assert referenced_files({**good, "square": {}})[-1] == "square_core.py"
    assert referenced_files({**good, "square": {"file": "s.py"}})[-1] == "s.py"
    for key in ("run_bundle.py", "square_core.py"):
        files = {k: v for k, v in good["files"].items() if k != key}
        _write(bundle, {**good, "files": files})
        with pytest.raises(BundleError, match=f"names '{key}', which it does not list and check"):
            verify_bundle(bundle)
    _write(bundle, {**good, "square": None, "files": good["files"]})
    verify_bundle(bundle)
    fmt = {"tflite-int8": {**good["formats"]["tflite-int8"], "file": "models/other.tflite"}}
    _write(bundle, {**good, "formats": fmt})
    with pytest.raises(BundleError, match="names 'models/other.tflite', which it does not list"):
        verify_bundle(bundle)
    bad = [
        ({"formats": {}}, "'formats' and 'eval_sets' must be mappings"),
        ({"formats": []}, "'formats' and 'eval_sets' must be mappings"),
        ({"eval_sets": []}, "'formats' and 'eval_sets' must be mappings"),
        ({"formats": {"onnx": "m.onnx"}}, "every format must be a mapping"),
        ({"square": "s.py"}, "'square' must be a mapping"),
    ]
    for change, msg in bad:
        with pytest.raises(BundleError, match=msg):
            referenced_files({**good, **change})


def test_file_entry_and_swap(tmp_path):
    import hashlib
    import shutil

    from robustedge.device.board.bundle_format import file_entry, swap_in_bundle
    from robustedge.errors import RobustEdgeError

    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert file_entry(f) == {"sha256": hashlib.sha256(b"abc").hexdigest(), "bytes": 3}
    assert file_entry(str(f))["bytes"] == 3
    out = tmp_path / "out"
    s1 = tmp_path / "s1"
    s1.mkdir()
    (s1 / "manifest.json").write_text("1")
    swap_in_bundle(s1, out)
    assert (out / "manifest.json").read_text() == "1" and not s1.exists()
    s2 = tmp_path / "s2"
    s2.mkdir()
    (s2 / "manifest.json").write_text("2")
    swap_in_bundle(s2, out)
    assert (out / "manifest.json").read_text() == "2" and not s2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "out"]
    other = tmp_path / "home"
    other.mkdir()
    (other / "precious").write_text("keep")
    s3 = tmp_path / "s3"
    s3.mkdir()
    with pytest.raises(RobustEdgeError, match=f"{other} exists and is not a bundle"):
        swap_in_bundle(s3, other)
    assert (other / "precious").read_text() == "keep" and s3.exists()
    (other / "precious").unlink()
    other.rmdir()
    # a swap cut short between its two renames: the old bundle waits in .out.old, out is gone
    os.replace(out, tmp_path / ".out.old")
    s4 = tmp_path / "s4"
    s4.mkdir()
    (s4 / "manifest.json").write_text("4")
    swap_in_bundle(s4, out)
    assert (out / "manifest.json").read_text() == "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "out", "s3"]
    stray = tmp_path / ".out.old"  # not a bundle: left alone, never swapped in
    stray.mkdir()
    shutil.rmtree(out)
    s5 = tmp_path / "s5"
    s5.mkdir()
    (s5 / "manifest.json").write_text("5")
    swap_in_bundle(s5, out)
    assert (out / "manifest.json").read_text() == "5" and stray.is_dir()
    other.write_text("a file")
    with pytest.raises(RobustEdgeError, match="exists and is not a bundle"):
        swap_in_bundle(s3, other)


def test_loading_the_square_core_writes_nothing_into_the_bundle(bundle, monkeypatch):
    """The runner imports the bundle's ``square_core.py`` by file path; where Python caches
    bytecode (the default), that import must not leave a ``__pycache__`` in the bundle: the
    next verification would refuse it as code the manifest does not list."""
    import sys

    from robustedge.device.board.bundle_format import load_square_core, verify_bundle

    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    mod = load_square_core(bundle / "square_core.py")
    assert mod.P_INIT > 0 and sys.dont_write_bytecode is False
    assert not list(bundle.rglob("__pycache__"))
    verify_bundle(bundle)
