"""The onnx2tf conversion cache: keyed by everything a conversion depends on, restored only
when every file matches its recorded sha256, written only by a conversion that succeeded.

The session's cache (tests/conftest.py) already holds ``device_export``'s conversion; the two
real-export tests read it (one real conversion, for the damaged entry)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from robustedge.cache import cache_dir, kind_env
from robustedge.export.convert_cache import KIND, conversion_cache, conversion_key

EXPORT = dict(formats="onnx,tflite-int8", transfer_steps=5, transfer_restarts=1)
INT8 = Path("export") / "model_int8.tflite"


def test_cache_dir_kind_variable_wins_then_common_root_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(kind_env("tflite"), raising=False)
    monkeypatch.delenv("ROBUSTEDGE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("tflite") == tmp_path / "xdg" / "robustedge" / "tflite"
    monkeypatch.setenv("ROBUSTEDGE_CACHE", str(tmp_path / "ci"))
    assert cache_dir("tflite") == tmp_path / "ci" / "tflite"
    assert kind_env("tflite") == "ROBUSTEDGE_CACHE_TFLITE"
    monkeypatch.setenv("ROBUSTEDGE_CACHE_TFLITE", str(tmp_path / "own"))
    assert cache_dir("tflite") == tmp_path / "own"
    monkeypatch.setenv("ROBUSTEDGE_CACHE_TFLITE", "OFF")
    assert cache_dir("tflite") is None
    assert cache_dir("qemu") == tmp_path / "ci" / "qemu"


def test_key_changes_with_each_input_and_only_then(tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07onnx-bytes")
    calib = np.zeros((2, 4, 4, 1), np.float32)
    sample = np.ones((1, 4, 4, 3), np.float32)
    base = conversion_key(onnx, ["-v", "info"], calib, sample)
    assert base == conversion_key(onnx, ["-v", "info"], calib.copy(), sample.copy())
    variants = [
        conversion_key(onnx, ["-v", "info", "-osd"], calib, sample),
        conversion_key(onnx, ["-v", "info"], calib.reshape(2, 4, 1, 4), sample),
        conversion_key(onnx, ["-v", "info"], calib + np.float32(1e-7), sample),
        conversion_key(onnx, ["-v", "info"], None, sample),
        conversion_key(onnx, ["-v", "info"], calib, None),
    ]
    onnx.write_bytes(b"\x08\x07onnx-bytez")
    variants.append(conversion_key(onnx, ["-v", "info"], calib, sample))
    assert len({base, *variants}) == 1 + len(variants)


def _convert_by_hand(workdir: Path, payload: bytes) -> None:
    (workdir / "onnx2tf_out").mkdir(parents=True)
    (workdir / "onnx2tf_out" / "model_float32.tflite").write_bytes(payload)
    (workdir / "onnx2tf.log").write_text("converted\n")


def test_stores_after_success_restores_verified_and_never_stores_a_failure(tmp_path, monkeypatch):
    monkeypatch.setenv(kind_env(KIND), str(tmp_path / "cache"))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    with pytest.raises(RuntimeError):
        with conversion_cache(onnx, ["-a"], None, None, tmp_path / "failed") as cached:
            assert not cached
            raise RuntimeError("the converter failed")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    with conversion_cache(onnx, ["-a"], None, None, tmp_path / "w1") as cached:
        assert not cached
        _convert_by_hand(tmp_path / "w1", b"model bytes")
    with conversion_cache(onnx, ["-a"], None, None, tmp_path / "w2") as cached:
        assert cached
    assert (tmp_path / "w2" / "onnx2tf_out" / "model_float32.tflite").read_bytes() == b"model bytes"
    assert (tmp_path / "w2" / "onnx2tf.log").read_text() == "converted\n"
    monkeypatch.setenv(kind_env(KIND), "off")
    with conversion_cache(onnx, ["-a"], None, None, tmp_path / "w3") as cached:
        assert not cached
    (tmp_path / "file").write_text("a file where the cache folder would be")
    monkeypatch.setenv(kind_env(KIND), str(tmp_path / "file" / "cache"))
    with conversion_cache(onnx, ["-a"], None, None, tmp_path / "w4") as cached:
        assert not cached  # an unusable cache folder: converted without it
        _convert_by_hand(tmp_path / "w4", b"model bytes")


def test_export_again_is_taken_from_the_cache_byte_for_byte(
    device_export, tiny_run, tmp_path, caplog
):
    from robustedge.export import ExportConfig, export_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    caplog.set_level(logging.INFO, logger="robustedge.export.convert_cache")
    export_run(run, ExportConfig(**EXPORT))
    assert "taken from the cache" in caplog.text
    assert artifacts(run) == artifacts(device_export)  # model.onnx too (onnx2tf rewrites it)


def test_a_damaged_entry_is_dropped_and_converted_again(
    device_export, tiny_run, tmp_path, caplog, monkeypatch
):
    from robustedge.export import ExportConfig, export_run

    own = tmp_path / "cache"
    shutil.copytree(cache_dir(KIND), own, ignore=shutil.ignore_patterns("*.lock"))
    damaged = list(own.glob("*/data/onnx2tf_out/*_full_integer_quant.tflite"))
    assert damaged
    for path in damaged:
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))
    monkeypatch.setenv(kind_env(KIND), str(own))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    caplog.set_level(logging.INFO, logger="robustedge.export.convert_cache")
    export_run(run, ExportConfig(**EXPORT))
    assert "dropping a damaged conversion cache entry" in caplog.text
    assert "taken from the cache" not in caplog.text
    assert artifacts(run) == artifacts(device_export)  # a conversion and a cache hit agree


def artifacts(run) -> dict:
    """Each exported file's name and bytes, and the sha256 export.json records for it."""
    import json

    recorded = json.loads((run / "export" / "export.json").read_text())["artifacts"]
    files = {a["file"]: a["sha256"] for a in recorded.values()}
    assert "model.onnx" in files
    return {f: ((run / "export" / f).read_bytes(), sha) for f, sha in files.items()}
