"""Board conditions (governor, frequency, temperature, throttling) read from a /sys tree, the
doctor's checks and fixes, the runner's refusal of a throttled run, the VM image's pieces that
need no VM (initramfs archive, module order), and ``device doctor local``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from robustedge.device.board import probe
from robustedge.device.host import doctor, vm_image
from robustedge.device.host.targets import LocalTarget, VMTarget
from robustedge.errors import RobustEdgeError


def fake_sys(root: Path, governor: str, cur_khz: int, temp_milli: int, cpus: int = 4) -> str:
    """A /sys tree with the files a Raspberry Pi 4 exposes (cpufreq, thermal zone)."""
    for i in range(cpus):
        d = root / f"devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "scaling_governor").write_text(governor + "\n")
        (d / "scaling_cur_freq").write_text(f"{cur_khz}\n")
        (d / "cpuinfo_max_freq").write_text("1800000\n")
    z = root / "class/thermal/thermal_zone0"
    z.mkdir(parents=True, exist_ok=True)
    (z / "type").write_text("cpu-thermal\n")
    (z / "temp").write_text(f"{temp_milli}\n")
    return str(root)


def test_conditions_read_from_sys(tmp_path):
    c = probe.conditions(fake_sys(tmp_path, "ondemand", 1500000, 61234))
    assert c["governors"] == ["ondemand"] and c["cur_mhz"] == [1500.0] * 4
    assert c["max_mhz"] == [1800.0] * 4 and c["temps_c"] == {"cpu-thermal": 61.2}
    assert c["max_temp_c"] == 61.2


def test_throttle_problems(tmp_path):
    cool = probe.conditions(fake_sys(tmp_path / "a", "performance", 1800000, 50000))
    assert probe.throttle_problems(cool, cool) == []
    slowed = probe.conditions(fake_sys(tmp_path / "b", "performance", 1000000, 50000))
    assert any("frequency changed" in p for p in probe.throttle_problems(cool, slowed))
    hot = probe.conditions(fake_sys(tmp_path / "c", "performance", 1800000, 84000))
    assert any("84.0 C" in p for p in probe.throttle_problems(cool, hot))
    # vcgencmd flags: 0x50005 = under-voltage + throttled now, both also since boot.
    pi = dict(cool, throttled="0x50005")
    problems = probe.throttle_problems(cool, pi)
    assert "throttled: under-voltage" in problems and "throttled: throttled" in problems
    assert "under-voltage during the run" in problems
    # A sticky since-boot bit that was already set before the run is not blamed on it.
    sticky = dict(cool, throttled="0x50000")
    assert probe.throttle_problems(sticky, sticky) == []


def _facts(**over):
    f = {
        "python": "3.11.2",
        "executable": "/usr/bin/python3",
        "machine": "aarch64",
        "numpy": "1.26.4",
        "interpreters": {"tflite_runtime": "2.14.0", "ai_edge_litert": None},
        "base": "robustedge",
        "free_mb": 5000.0,
        "conditions": {
            "governors": ["performance"],
            "cur_mhz": [1800.0],
            "max_temp_c": 50.0,
            "throttled": "0x0",
        },
    }
    f.update(over)
    return f


def test_diagnose_all_ok():
    checks = doctor.diagnose(_facts())
    assert [c.status for c in checks] == ["ok"] * 6


@pytest.mark.parametrize(
    "over, name, fix",
    [
        ({"python": "3.7.3"}, "python", "Python >= 3.9"),
        ({"numpy": None}, "numpy", "python3 -m pip install numpy"),
        ({"numpy": None, "machine": "armv7l"}, "numpy", "sudo apt install python3-numpy"),
        ({"interpreters": {}}, "interpreter", "pip install tflite-runtime"),
        ({"free_mb": 12.0}, "disk", "deploy elsewhere"),
        ({"conditions": {"governors": ["ondemand"]}}, "governor", "scaling_governor"),
        (
            {"conditions": {"governors": ["performance"], "throttled": "0x4"}},
            "throttling",
            "get_throttled",
        ),
    ],
)
def test_diagnose_failures_name_the_fix(over, name, fix):
    checks = {c.name: c for c in doctor.diagnose(_facts(**over))}
    assert checks[name].status == "fail" and fix in checks[name].fix


def test_diagnose_without_python():
    (c,) = doctor.diagnose({}, python="python9")
    assert c.status == "fail" and "python9" in c.detail and "apt install python3" in c.fix


def test_local_doctor_probe_is_real():
    facts = doctor.board_facts(LocalTarget())
    assert facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert facts["numpy"] and facts["free_mb"] > 0


def test_cli_doctor_local(cli):
    proc = cli("device", "doctor", "local")
    assert "[ok  ] python" in proc.stdout and "[ok  ] numpy" in proc.stdout
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr


def test_throttled_run_is_flagged_and_refused(tmp_path):
    """The board heats up and slows down while it is timed (the timed loop itself rewrites the
    /sys files, as the firmware would): the latency is flagged, and refused on request."""
    import numpy as np

    from robustedge.device.board import measure
    from robustedge.device.board.onboard import refuse_if_throttled

    root = fake_sys(tmp_path, "performance", 1800000, 50000)

    def timed(arg, n):
        if n == 200:  # the timed runs, not the warm-up
            fake_sys(tmp_path, "performance", 600000, 86000)
        return np.full(n, 1e-3)

    lat = measure.timed_latency(timed, None, 200, 5, 1, False, sys_root=root)
    assert lat.throttled and len(lat.problems) == 2 and lat.p50_ms == 1.0
    assert lat.conditions["before"]["max_temp_c"] == 50.0
    assert lat.conditions["after"]["cur_mhz"] == [600.0] * 4
    refuse_if_throttled(lat, refuse=False)  # flagged only
    with pytest.raises(probe.ThrottledRun, match="86.0 C"):
        refuse_if_throttled(lat, refuse=True)
    fake_sys(tmp_path, "performance", 1800000, 50000)  # cooled down again
    calm = measure.timed_latency(lambda a, n: np.full(n, 1e-3), None, 200, 5, 1, False, root)
    assert not calm.throttled and calm.problems == []


def test_newc_archive_layout():
    data = vm_image.newc_archive([("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n")])
    assert data.startswith(b"070701") and b"TRAILER!!!" in data and len(data) % 4 == 0
    assert int(data[6 + 6 * 8 : 6 + 7 * 8], 16) == len(b"#!/bin/sh\n")  # filesize field
    if os.path.exists("/usr/bin/cpio"):  # cross-check with GNU cpio when it is installed
        out = subprocess.run(["cpio", "-t"], input=data, capture_output=True)
        assert out.stdout.split() == [b"init"]


def test_module_load_order(tmp_path):
    """Dependencies (from each .ko's .modinfo ``depends=``) load first; built-ins are skipped."""
    mods = tmp_path / "kernel"
    mods.mkdir()
    for name, deps in {"ext4": "mbcache,jbd2", "jbd2": "", "mbcache": "", "virtio_blk": ""}.items():
        (mods / f"{name}.ko").write_bytes(b"\x7fELF\0license=GPL\0depends=" + deps.encode() + b"\0")
    order = vm_image.load_order(["virtio_blk", "ext4", "virtio_mmio"], vm_image.module_index(mods))
    assert [p.stem for p in order] == ["virtio_blk", "mbcache", "jbd2", "ext4"]


def test_vm_without_image_says_what_to_run(tmp_path):
    with pytest.raises(RobustEdgeError, match="setup-vm --arch aarch64"):
        VMTarget("aarch64", root=tmp_path)


def test_vm_spec_validates():
    with pytest.raises(ValueError, match="256 MiB"):
        vm_image.VMSpec("x", "arm64", "k", (), "q", "virt", "c", 1, 64, "ttyAMA0", "aarch64")
    assert json.dumps(vm_image.vm_spec("aarch64").model).count("cortex-a72") == 1


def test_bench_config_validates():
    from robustedge.device.board.config import BenchConfig

    assert BenchConfig().runs == 200 and BenchConfig().warmup == 20
    with pytest.raises(ValueError, match="threads must be >= 1"):
        BenchConfig(threads=0)
    with pytest.raises(ValueError, match="warmup must be >= 0"):
        BenchConfig(warmup=-1)
