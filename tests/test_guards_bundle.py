"""Guards on the bundle check (issue 16): every file kind (models, data, runner code,
manifest-listed files) is checked against same-size edits, on the host and on the board's
``--verify-only`` path; an unlisted file of each kind is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from hostile_kit import fake_int8_export
from robustedge.device.board.bundle_format import BundleError, verify_bundle

# ------------------------------------------------------------------------------- bundle


@pytest.fixture(scope="module")
def built_bundle(tmp_path_factory) -> Path:
    from robustedge.device.host.bundle import build_bundle

    run = fake_int8_export(tmp_path_factory.mktemp("guard") / "run")
    return build_bundle(run, run.parent / "bundle")


def _copy(bundle: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "b"
    shutil.copytree(bundle, dst)
    return dst


def _same_size_edit(path: Path) -> None:
    """Change one byte, keeping the size (and, for Python files, valid syntax: a letter of
    the module docstring, so the edited code would still import and run)."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".py":
        i = next(i for i in range(3, len(data)) if chr(data[i]).isalpha())
        assert data[:3] in (b'"""', b"#!/") or data[:1] == b"#", path
    else:
        i = len(data) // 2
    data[i] = data[i] ^ 0x20 if chr(data[i]).isalpha() else data[i] ^ 0x01
    path.write_bytes(bytes(data))


def _kinds(bundle: Path) -> Dict[str, str]:
    files = sorted(json.loads((bundle / "manifest.json").read_text())["files"])
    return {rel: rel.split("/")[0] for rel in files}


def test_bundle_lists_every_file_kind(built_bundle):
    kinds = set(_kinds(built_bundle).values())
    assert {"models", "data", "lib", "run_bundle.py", "square_core.py"} <= kinds
    listed = set(_kinds(built_bundle))
    on_disk = {p.relative_to(built_bundle).as_posix() for p in built_bundle.rglob("*")}
    on_disk = {p for p in on_disk if (built_bundle / p).is_file()}
    assert on_disk == listed | {"manifest.json"}  # nothing unchecked rides along
    for rel in ("lib/robustedge/errors.py", "lib/robustedge/hashing.py"):
        assert rel in listed


def test_every_listed_file_is_checked_on_the_host(built_bundle, tmp_path):
    """A same-size one-byte edit of any listed file (models/*, data/*, lib/*, entry, Square
    core) is refused, naming that file."""
    b = _copy(built_bundle, tmp_path)
    verify_bundle(b)
    for rel in _kinds(b):
        original = (b / rel).read_bytes()
        _same_size_edit(b / rel)
        assert (b / rel).stat().st_size == len(original)
        with pytest.raises(BundleError, match=f"sha256 of {rel} does not match"):
            verify_bundle(b)
        (b / rel).write_bytes(original)
    assert verify_bundle(b)["files"]


def _board(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """The bundle's own entry script in a fresh interpreter, as the board runs it (no torch)."""
    code = (
        "import sys, runpy\n"
        "for m in ('torch', 'tensorflow', 'click', 'yaml', 'onnx'): sys.modules[m] = None\n"
        f"sys.argv = ['run_bundle.py', *{list(args)!r}]\n"
        f"runpy.run_path({str(bundle / 'run_bundle.py')!r}, run_name='__main__')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )


def test_every_listed_file_is_checked_on_the_board(built_bundle, tmp_path):
    b = _copy(built_bundle, tmp_path)
    ok = _board(b, "--verify-only")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"bundle ok: {len(_kinds(b))} files verified")
    for rel in _kinds(b):
        original = (b / rel).read_bytes()
        _same_size_edit(b / rel)
        proc = _board(b, "--verify-only")
        assert proc.returncode == 3, (rel, proc.stdout, proc.stderr)
        assert proc.stderr.strip() == (
            f"error: refusing bundle: tampered bundle: sha256 of {rel} does not match the manifest"
        )
        (b / rel).write_bytes(original)


@pytest.mark.parametrize("kind", ["models", "data", "lib", "square_core.py", "run_bundle.py"])
def test_unlisted_file_of_each_kind_refused(built_bundle, tmp_path, kind):
    """Dropping a file's manifest entry does not exempt it: the runner opens it, so it must be
    listed (models, eval sets, Square core, entry), and unlisted code is refused."""
    b = _copy(built_bundle, tmp_path)
    manifest = json.loads((b / "manifest.json").read_text())
    rel = next(r for r, k in _kinds(b).items() if k == kind)
    del manifest["files"][rel]
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rel.replace(".", r"\.")):
        verify_bundle(b)
    proc = _board(b, "--verify-only")
    assert proc.returncode == 3 and rel in proc.stderr, proc.stderr


def test_size_change_and_missing_file_refused(built_bundle, tmp_path):
    b = _copy(built_bundle, tmp_path)
    rel = next(r for r, k in _kinds(b).items() if k == "data")
    with open(b / rel, "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=f"tampered bundle: {rel} has"):
        verify_bundle(b)
    (b / rel).unlink()
    with pytest.raises(BundleError, match=f"incomplete bundle: {rel} is missing"):
        verify_bundle(b)
