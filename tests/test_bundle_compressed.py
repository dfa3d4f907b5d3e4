"""Compressed bundles: models rest compressed (xz by default, gzip, or plain with
``--no-compress``), the board inflates them and checks both the sha256 of the stored
(compressed) bytes and of the bytes they inflate to, on the host (``verify_bundle``), through the
real runner entry (``run_bundle.py --verify-only``), through the ``local`` target's bench, and
under qemu-aarch64 when this machine can emulate it."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
from pathlib import Path

import pytest

from robustedge.device.board.bundle_format import (
    MANIFEST,
    BundleError,
    compress_bytes,
    file_entry,
    inflate_model,
    verify_bundle,
)
from robustedge.device.board.config import BenchConfig
from robustedge.device.host.targets import LocalTarget
from robustedge.errors import RobustEdgeError
from test_device import bundle, copy_bundle, run_runner  # noqa: F401

FAST = BenchConfig(runs=0, square_queries=0)


def _manifest(b: Path) -> dict:
    return json.loads((b / MANIFEST).read_text())


def _write_manifest(b: Path, m: dict) -> None:
    (b / MANIFEST).write_text(json.dumps(m, indent=2))


def _stored(b: Path, fmt: str = "tflite-int8") -> Path:
    return b / _manifest(b)["formats"][fmt]["file"]


def test_default_bundle_is_compressed(bundle, device_export):  # noqa: F811
    m = verify_bundle(bundle)
    export = json.loads((device_export / "export" / "export.json").read_text())
    for fmt in ("tflite-int8", "onnx"):
        art, exported = m["formats"][fmt], export["artifacts"][fmt]
        raw = (device_export / "export" / exported["file"]).read_bytes()
        assert art["codec"] == "xz" and art["file"] == f"models/{exported['file']}.xz"
        assert art["model_file"] == exported["file"]
        assert art["model_sha256"] == exported["sha256"] == hashlib.sha256(raw).hexdigest()
        assert art["model_bytes"] == len(raw)
        stored = bundle / art["file"]
        assert art["flash_bytes"] == stored.stat().st_size == m["files"][art["file"]]["bytes"]
        assert lzma.decompress(stored.read_bytes()) == raw
        assert art["flash_bytes"] < art["model_bytes"]
        assert not (bundle / "models" / exported["file"]).exists()  # only the compressed copy


def test_inflate_model_writes_the_checked_bytes(bundle, tmp_path):  # noqa: F811
    art = verify_bundle(bundle)["formats"]["tflite-int8"]
    out = tmp_path / "m.tflite"
    with open(out, "wb") as f:
        got = inflate_model(bundle / art["file"], art, f)
    assert got == {"bytes": art["model_bytes"], "sha256": art["model_sha256"]}
    assert hashlib.sha256(out.read_bytes()).hexdigest() == art["model_sha256"]


def _tamper_compressed(b: Path) -> str:
    """Flip one stored byte of the compressed model; the manifest is left alone."""
    stored = _stored(b)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    return f"tampered bundle: sha256 of {stored.relative_to(b).as_posix()} does not match"


def _tamper_payload(b: Path) -> str:
    """Replace the compressed model by a valid stream of other bytes of the same length and
    re-list it in ``files``: only the decompressed-bytes check can catch it."""
    m = _manifest(b)
    art = m["formats"]["tflite-int8"]
    stored = b / art["file"]
    raw = bytearray(lzma.decompress(stored.read_bytes()))
    raw[len(raw) // 2] ^= 0x01
    stored.write_bytes(compress_bytes(bytes(raw), "xz"))
    assert len(raw) == art["model_bytes"]
    m["files"][art["file"]] = file_entry(stored)
    _write_manifest(b, m)
    return f"tampered bundle: sha256 of {art['file']} decompressed does not match the manifest"


TAMPER = {"compressed": _tamper_compressed, "decompressed": _tamper_payload}


@pytest.mark.parametrize("damage", sorted(TAMPER))
def test_tampered_refused_on_host(bundle, tmp_path, damage):  # noqa: F811
    b = copy_bundle(bundle, tmp_path)
    want = TAMPER[damage](b)
    with pytest.raises(BundleError) as e:
        verify_bundle(b)
    assert str(e.value).startswith(want) and "\n" not in str(e.value)


@pytest.mark.parametrize("damage", sorted(TAMPER))
def test_tampered_refused_by_runner_verify_only(bundle, tmp_path, damage):  # noqa: F811
    b = copy_bundle(bundle, tmp_path)
    want = TAMPER[damage](b)
    proc = run_runner(b, "--verify-only")
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: refusing bundle: {want}")
    assert proc.stdout == ""


@pytest.mark.parametrize("damage", sorted(TAMPER))
def test_tampered_refused_by_local_bench(bundle, tmp_path, damage):  # noqa: F811
    b = copy_bundle(bundle, tmp_path)
    want = TAMPER[damage](b)
    with pytest.raises(RobustEdgeError) as e:  # in place: the board's runner refuses it
        LocalTarget().bench(b, FAST)
    msg = str(e.value)
    assert "exit 3" in msg and f"error: refusing bundle: {want}" in msg and "\n" not in msg
    (tmp_path / "card").mkdir()
    with pytest.raises(BundleError, match=want.split(":")[0]):  # installed: refused on upload
        LocalTarget(str(tmp_path / "card" / "home")).bench(b, FAST)
    assert not any((tmp_path / "card").rglob("*.xz"))  # nothing was installed


def test_verify_only_counts_inflated_models(bundle, tmp_path):  # noqa: F811
    proc = run_runner(copy_bundle(bundle, tmp_path), "--verify-only")
    assert proc.returncode == 0, proc.stderr
    assert "2 compressed model(s) inflated and verified" in proc.stdout


def _rewrite_stored(b: Path, data: bytes) -> None:
    """New stored bytes for the compressed model, re-listed in ``files`` (not in the payload)."""
    m = _manifest(b)
    rel = m["formats"]["tflite-int8"]["file"]
    (b / rel).write_bytes(data)
    m["files"][rel] = file_entry(b / rel)
    _write_manifest(b, m)


def _raw(b: Path) -> bytes:
    return lzma.decompress(_stored(b).read_bytes())


@pytest.mark.parametrize(
    "case, want",
    [
        ("truncated", "does not decompress (truncated xz stream)"),
        ("trailing", "does not decompress (data after the end of the compressed stream)"),
        ("longer", "decompresses to more than the"),
        ("shorter", "decompresses to"),
        ("garbage", "does not decompress ("),
    ],
)
def test_bad_streams_refused(bundle, tmp_path, case, want):  # noqa: F811
    b = copy_bundle(bundle, tmp_path)
    raw, packed = _raw(b), _stored(b).read_bytes()
    data = {
        "truncated": packed[: len(packed) // 2],
        "trailing": packed + b"\0junk",
        "longer": compress_bytes(raw + b"\0" * (1 << 20), "xz"),  # bounded: never inflated whole
        "shorter": compress_bytes(raw[:-1], "xz"),
        "garbage": b"\xfd7zXZ\0" + bytes(200),
    }[case]
    _rewrite_stored(b, data)
    with pytest.raises(BundleError, match="tampered bundle: models/model_int8.tflite.xz") as e:
        verify_bundle(b)
    assert want in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "edit, want",
    [
        ({"codec": "zstd"}, "has unknown codec 'zstd'"),
        ({"model_sha256": None}, "records no model_sha256/model_bytes"),
        ({"model_bytes": "12"}, "records no model_sha256/model_bytes"),
        ({"model_bytes": 1 << 40}, "claims to inflate to 1099511627776 bytes"),
        ({"model_bytes": 0}, "claims to inflate to 0 bytes"),
    ],
)
def test_manifest_codec_fields_checked(bundle, tmp_path, edit, want):  # noqa: F811
    b = copy_bundle(bundle, tmp_path)
    m = _manifest(b)
    m["formats"]["tflite-int8"].update(edit)
    _write_manifest(b, m)
    with pytest.raises(BundleError, match=want):
        verify_bundle(b)


def test_compressed_bundle_runs_on_local_target(bundle, device_export, tmp_path):  # noqa: F811
    """End to end on the local target: the inflated model gives the same outputs, bit for bit,
    as the same model stored plain; the results name flash bytes, model bytes and peak RSS."""
    from robustedge.device.host.bundle import BundleConfig, build_bundle

    args = BenchConfig(reference_kernels=True, runs=200, square_queries=10, square_n=5)
    packed = LocalTarget().bench(copy_bundle(bundle, tmp_path), args)
    plain_b = build_bundle(device_export, tmp_path / "plain", BundleConfig(codec="none"))
    plain = LocalTarget().bench(plain_b, args)
    art = verify_bundle(bundle)["formats"]["tflite-int8"]
    assert packed["codec"] == "xz" and packed["model_file"] == art["file"]
    assert packed["flash_bytes"] == art["flash_bytes"] < packed["model_bytes"]
    assert packed["model_bytes"] == art["model_bytes"] == plain["model_bytes"]
    assert packed["decompress_ms"] > 0 and packed["peak_rss_mb"] > 0
    assert plain["codec"] is None and plain["decompress_ms"] is None
    assert plain["flash_bytes"] == plain["model_bytes"]
    assert packed["output_sha256"] == plain["output_sha256"]
    assert packed["accuracy"] == plain["accuracy"]
    assert packed["accuracy"]["clean"] == pytest.approx(art["parity"]["clean_acc"], abs=1e-12)
    assert packed["robust"][0]["acc"] == plain["robust"][0]["acc"]


def test_gzip_and_plain_bundles(device_export, tmp_path):  # noqa: F811
    from robustedge.device.host.bundle import BundleConfig, build_bundle

    gz = build_bundle(device_export, tmp_path / "gz", BundleConfig(("tflite-int8",), "gzip"))
    art = verify_bundle(gz)["formats"]["tflite-int8"]
    assert art["codec"] == "gzip" and art["file"].endswith(".tflite.gz")
    assert (
        hashlib.sha256(gzip.decompress((gz / art["file"]).read_bytes())).hexdigest()
        == (art["model_sha256"])
    )
    r = LocalTarget().bench(gz, FAST)
    assert r["codec"] == "gzip" and r["flash_bytes"] == art["flash_bytes"]
    plain = build_bundle(device_export, tmp_path / "plain", BundleConfig(("tflite-int8",), "none"))
    art = verify_bundle(plain)["formats"]["tflite-int8"]
    assert art["file"] == "models/model_int8.tflite" and "codec" not in art
    r = LocalTarget().bench(plain, FAST)
    assert r["flash_bytes"] == r["model_bytes"] == (plain / art["file"]).stat().st_size
    with pytest.raises(ValueError, match="unknown codec 'zip' \\(known: xz, gzip, none\\)"):
        build_bundle(device_export, tmp_path / "bad", BundleConfig(codec="zip"))
    assert not (tmp_path / "bad").exists()


def test_old_bundle_without_codec_fields_still_runs(bundle, device_export, tmp_path):  # noqa: F811
    """A bundle written before compression (no codec / model_* / flash_bytes keys) verifies and
    runs, and reports its one file as both flash and model bytes."""
    from robustedge.device.host.bundle import BundleConfig, build_bundle

    old = build_bundle(device_export, tmp_path / "old", BundleConfig(("tflite-int8",), "none"))
    m = _manifest(old)
    for key in ("codec", "model_file", "model_bytes", "model_sha256", "flash_bytes"):
        assert key not in m["formats"]["tflite-int8"]
    proc = run_runner(old, "--verify-only")
    assert proc.returncode == 0 and "compressed" not in proc.stdout, proc.stderr
    r = LocalTarget().bench(old, FAST)
    assert r["model_bytes"] == r["flash_bytes"] and r["codec"] is None


def test_cli_bundle_compress_flags(device_export, tmp_path, cli):  # noqa: F811
    proc = cli("bundle", str(device_export), "--out", str(tmp_path / "xz"), "--formats", "onnx")
    assert proc.returncode == 0, proc.stderr
    art = verify_bundle(tmp_path / "xz")["formats"]["onnx"]
    assert f"onnx: {art['flash_bytes']:,} flash bytes (xz), {art['model_bytes']:,} model bytes" in (
        proc.stdout
    )
    proc = cli(
        "bundle", str(device_export), "--out", str(tmp_path / "pl"), "--formats", "onnx",
        "--no-compress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert verify_bundle(tmp_path / "pl")["formats"]["onnx"]["file"] == "models/model.onnx"
    assert "flash bytes" not in proc.stdout
    proc = cli("bundle", str(device_export), "--out", str(tmp_path / "b"), "--codec", "zip")
    assert proc.returncode == 2 and "Invalid value for '--codec'" in proc.stderr


@pytest.mark.qemu
@pytest.mark.slow
def test_compressed_bundle_on_qemu_aarch64(bundle):  # noqa: F811
    """The emulated aarch64 Python inflates (stdlib lzma) and verifies the model, runs it, and
    gives the host's outputs bit for bit (reference kernels)."""
    from robustedge.device.host.targets import QemuTarget
    from test_device_targets import rootfs

    rootfs("aarch64")
    cfg = BenchConfig(reference_kernels=True, runs=200, square_queries=0, backend="tflite-runtime")
    r = QemuTarget("aarch64").bench(bundle, cfg)
    host = LocalTarget().bench(bundle, cfg)
    art = verify_bundle(bundle)["formats"]["tflite-int8"]
    assert r["board"]["machine"] == "aarch64" and r["emulated"] is True
    assert r["codec"] == "xz" and r["flash_bytes"] == art["flash_bytes"]
    assert r["model_bytes"] == art["model_bytes"] and r["decompress_ms"] > 0
    assert r["output_sha256"] == host["output_sha256"]
