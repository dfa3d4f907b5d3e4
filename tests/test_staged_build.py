"""The emulated boards' images (qemu-user userland, full-system VM) are built in a stage folder
and swapped in only when complete: a failed build never leaves a half image that looks ready."""

from __future__ import annotations

import json

import pytest

from robustedge.device.host.qemu import build_staged


def test_complete_build_is_swapped_in_with_ready_last(tmp_path):
    final = tmp_path / "cache" / "vm-aarch64"

    def build(stage):
        assert stage.parent == final.parent and stage.name.startswith(".vm-aarch64.")
        assert not (stage / "READY.json").exists()
        (stage / "disk.img").write_bytes(b"x")
        return {"arch": "aarch64"}

    build_staged(final, build)
    assert json.loads((final / "READY.json").read_text()) == {"arch": "aarch64"}
    assert (final / "disk.img").read_bytes() == b"x"
    assert sorted(p.name for p in final.parent.iterdir()) == ["vm-aarch64"]


def test_failed_rebuild_keeps_the_old_image_and_leaves_no_stage(tmp_path):
    final = tmp_path / "aarch64"
    build_staged(final, lambda stage: {"v": 1})

    def broken(stage):
        (stage / "half").write_bytes(b"y")
        raise RuntimeError("mmdebstrap failed")

    with pytest.raises(RuntimeError, match="mmdebstrap failed"):
        build_staged(final, broken)
    assert json.loads((final / "READY.json").read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aarch64"]
