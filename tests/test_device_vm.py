"""The full-system aarch64 VM board (``vm-aarch64``): a real separate kernel and sshd under
qemu-system-aarch64, reached over SSH on a loopback port. The image is built once and cached
(``robustedge device setup-vm``, ~1 minute on a fresh machine) and the VM boots once per test
session (reused if one is already running). Needs root and the packages from
``scripts/install-system-deps.sh``; skips with that reason otherwise."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from robustedge.device.host import vm
from robustedge.device.host.targets import SSHTarget, VMTarget
from robustedge.errors import RobustEdgeError
from test_device import bundle, copy_bundle  # noqa: F401  (shared fixtures)
from test_device_targets import BENCH, HINT, host_ref, need_root  # noqa: F401

pytestmark = [pytest.mark.vm, pytest.mark.ssh, pytest.mark.slow]


@pytest.fixture(scope="session")
def board_vm():
    """The cached image, booted once (a fresh overlay: no state from earlier runs) and shared
    by the pytest-xdist workers: each holds a lease while it runs; the last one out stops it,
    unless it was running before the tests began."""
    need_root("mmdebstrap", "mke2fs", "ssh", "ssh-keygen", "qemu-system-aarch64", "qemu-img")
    vm.setup_vm("aarch64")
    machine = vm.VM("aarch64")
    machine.state_dir.mkdir(parents=True, exist_ok=True)
    booted, lease = machine.state_dir / "tests-booted", machine.state_dir / f"tests-{os.getpid()}"
    with _tests_lock(machine):
        if machine.state() is None:
            booted.touch()
        st = machine.start(fresh=booted.exists() and not _leases(machine))
        lease.touch()
    yield machine, st
    with _tests_lock(machine):
        lease.unlink()
        if not _leases(machine) and booted.exists():
            machine.stop()
            booted.unlink()


@contextlib.contextmanager
def _tests_lock(machine):
    with open(machine.state_dir / "tests-lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _leases(machine) -> list:
    """The test processes using the VM now (a lease whose process is gone is dropped)."""
    live = []
    for p in machine.state_dir.glob("tests-[0-9]*"):
        if os.path.exists(f"/proc/{p.name[6:]}"):
            live.append(p)
        else:
            p.unlink(missing_ok=True)
    return live


def test_vm_bench_matches_host(board_vm, bundle, host_ref, cli, tmp_path):  # noqa: F811
    """``robustedge bench --target vm-aarch64`` reuses the running VM; everything about the board
    comes from the VM's own kernel; int8 outputs are bit-identical to the host's."""
    machine, st = board_vm
    out = tmp_path / "vm.json"
    args = ["--bundle", str(bundle), "--target", "vm-aarch64", "--out", str(out), "--threads", "2"]
    proc = cli("bench", *args, *BENCH)
    assert proc.returncode == 0, proc.stderr
    assert "EMULATED" in proc.stdout
    r = json.loads(out.read_text())
    b = r["board"]
    assert r["target"] == "vm-aarch64" and r["emulated"] is True and r["latency_note"]
    assert b["machine"] == "aarch64" and b["model"] == "linux,dummy-virt"
    assert b["cpu_model"] == "Cortex-A72" and b["cpu_count"] == 4 and b["looks_emulated"]
    assert 1500 < b["mem_total_mb"] <= 2048  # the VM's own /proc/meminfo, not the host's
    assert b["kernel"] != os.uname().release and b["kernel"].endswith("arm64")
    assert "cortex-a72" in r["emulation"]["model"] and r["emulation"]["boot_s"] == st.boot_s
    assert r["backend"] == "tflite-runtime" and r["kernels"] == "BUILTIN_REF"
    assert r["threads"] == 2 and r["latency"]["threads"] == 2  # --threads reaches the board
    assert r["output_sha256"] == host_ref["output_sha256"]  # int8 outputs bit-identical
    assert r["accuracy"] == host_ref["accuracy"]
    assert r["robust"][0]["acc"] == host_ref["robust"][0]["acc"]
    assert all(p["equal"] for p in r["parity"].values())
    # Peak RSS is the runner's own VmHWM, read inside the VM.
    assert 5 < r["peak_rss_mb"] < 500
    lat = r["latency"]
    assert lat["runs"] == 200 and lat["warmup"] == 20
    assert set(lat["conditions"]) == {"before", "after"}
    assert lat["conditions"]["before"]["governors"] == []  # QEMU virt exposes no cpufreq
    assert r["upload_s"] > 0
    status = cli("device", "vm", "status")  # the running VM was reused, not booted again
    assert status.returncode == 0 and f"127.0.0.1:{st.port}" in status.stdout


def test_vm_refusals(board_vm, bundle, tmp_path):  # noqa: F811
    machine, st = board_vm
    good = VMTarget("aarch64", path="~/refusals")  # a folder of its own: tests share the VM
    live = good.deploy(bundle)
    # Wrong client key: the VM's sshd says no (a connection of its own: a shared session to
    # the VM, logged in with the right key, must not answer for it).
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")])
    opts = machine.ssh_options(st, shared=False)
    opts[opts.index("-i") + 1] = str(tmp_path / "k")
    with pytest.raises(RobustEdgeError, match="Permission denied"):
        SSHTarget(machine.ssh_url(st), opts).deploy(bundle)
    # A host key other than the one generated with the image: refused before anything is sent.
    other = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "h")])
    kind, key = (tmp_path / "h.pub").read_text().split()[:2]
    other.write_text(f"[127.0.0.1]:{st.port} {kind} {key}\n")
    opts = [
        o if not o.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={other}"
        for o in machine.ssh_options(st, shared=False)
    ]
    with pytest.raises(RobustEdgeError, match="Host key verification failed"):
        SSHTarget(machine.ssh_url(st), opts).deploy(bundle)
    # A board without numpy: the runner says what to pip install (run on the bundle deployed
    # above: the runner is the one that answers).
    with pytest.raises(RobustEdgeError, match="pip install numpy"):
        VMTarget("aarch64", python=bare_python(machine, st)).run(live, ["--runs", "200"])
    # A tampered upload is refused on the board; the live bundle stays as it was.
    bad = copy_bundle(bundle, tmp_path)
    (bad / "square_core.py").write_text("raise SystemExit\n")
    with pytest.raises(RobustEdgeError, match="tampered"):
        good.deploy(bad)
    assert _unchanged(machine, st, bundle, live)
    assert _entries(machine, st, bundle.name, "refusals") == [bundle.name]


def bare_python(machine, st) -> str:
    """``python3-bare`` on the VM: its Python without site-packages (no numpy, no interpreter)."""
    machine.ssh(
        st,
        "mkdir -p /usr/local/bin && "
        "printf '#!/bin/sh\\nexec python3 -S \"$@\"\\n' > /usr/local/bin/python3-bare && "
        "chmod 755 /usr/local/bin/python3-bare",
    )
    return "python3-bare"


def _entries(machine, st, name: str, folder: str) -> list:
    """This bundle and any upload/swap leftovers in the board's bundle folder ``~/folder``."""
    out = machine.ssh(st, f"ls -A ~/{folder}", user=vm.USER).stdout.split()
    return [e for e in out if e.startswith(".") or e == name]


def _unchanged(machine, st, local: Path, live: str) -> bool:
    """The manifest and every file it lists are on the board in ``live`` byte for byte as in
    ``local`` (the bundle that verified on deploy: this is what --verify-only checks, without
    the emulated Python start)."""
    files = ["manifest.json", *sorted(json.loads((local / "manifest.json").read_text())["files"])]
    here = [f"{hashlib.sha256((local / f).read_bytes()).hexdigest()}  {f}" for f in files]
    names = " ".join(shlex.quote(f) for f in files)
    there = machine.ssh(st, f"cd {live} && sha256sum {names}", user=vm.USER).stdout
    return there.splitlines() == here


def _partial(machine, st, size: int) -> bool:
    """An upload in progress on the board holds part of padding.bin (and not all of it)."""
    out = machine.ssh(st, "stat -c %s ~/cut/.upload.*/*/data/padding.bin", user=vm.USER,
                      check=False).stdout.split()  # fmt: skip
    return len(out) == 1 and 0 < int(out[0]) < size


def _inode(machine, st, path: str) -> str:
    return machine.ssh(st, f"stat -c %i {path}", user=vm.USER).stdout.strip()


def test_vm_interrupted_upload_keeps_old_bundle(board_vm, bundle, tmp_path):  # noqa: F811
    machine, st = board_vm
    target = VMTarget("aarch64", path="~/cut")  # a folder of its own: tests share the VM
    live = target.deploy(bundle)
    before = _inode(machine, st, live)
    big = copy_bundle(bundle, tmp_path)
    (big / "data" / "padding.bin").write_bytes(os.urandom(1 << 20))
    tar = tmp_path / "b.tar"
    with tarfile.open(tar, "w") as t:
        t.add(big, arcname=big.name)
    data = tar.read_bytes()
    cut = len(data) // 3  # a third of the archive, then the link drops: inside padding.bin
    with tarfile.open(tar) as t:
        pad = t.getmember(f"{big.name}/data/padding.bin")
    assert pad.offset_data < cut < pad.offset_data + pad.size
    script = target.deploy_script(big.name)
    own = ["ssh", "-o", "BatchMode=yes", *machine.ssh_options(st, shared=False)]  # a link to cut
    own += ["-p", str(st.port), target.dest, script]
    proc = subprocess.Popen(own, stdin=subprocess.PIPE)
    proc.stdin.write(data[:cut])
    proc.stdin.flush()
    for _ in range(100):  # the board is writing the upload when the connection drops
        if _partial(machine, st, pad.size):
            break
        time.sleep(0.2)
    assert _partial(machine, st, pad.size)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode != 0
    for _ in range(50):  # the board notices the dropped connection and cleans up
        if _entries(machine, st, bundle.name, "cut") == [bundle.name]:
            break
        time.sleep(0.2)
    assert _entries(machine, st, bundle.name, "cut") == [bundle.name]
    assert _inode(machine, st, live) == before  # the old bundle was never swapped out
    assert _unchanged(machine, st, bundle, live)


def test_vm_disk_full_leaves_nothing(board_vm, bundle):  # noqa: F811
    machine, st = board_vm
    machine.ssh(
        st,
        "mkdir -p /home/board/full && mount -t tmpfs -o size=64k tmpfs /home/board/full "
        "&& chown board: /home/board/full",
    )
    try:
        with pytest.raises(RobustEdgeError, match="No space left"):
            VMTarget("aarch64", path="~/full").deploy(bundle)
        assert machine.ssh(st, "ls -A /home/board/full").stdout.split() == []
    finally:
        machine.ssh(st, "umount /home/board/full")


def test_vm_doctor(board_vm, cli):
    machine, st = board_vm
    proc = cli("device", "doctor", "vm-aarch64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "[ok  ] python" in out and "numpy 1.26.4" in out and "tflite_runtime 2.14.0" in out
    assert "[ok  ] disk" in out and "[warn] governor" in out and "vm-aarch64: ready" in out
    # A python without the board's packages: each failure comes with its fix.
    bare_python(machine, st)
    proc = cli("device", "doctor", "vm-aarch64", "--python", "python3-bare")
    assert proc.returncode == 1
    assert "[fail] numpy" in proc.stdout and "fix: python3-bare -m pip install numpy" in proc.stdout
    assert "[fail] interpreter" in proc.stdout and "pip install tflite-runtime" in proc.stdout
    proc = cli("device", "doctor", "vm-aarch64", "--python", "python9")
    assert proc.returncode == 1 and "no 'python9' on the board" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_vm_armv7_matches_host(bundle, host_ref):  # noqa: F811
    """armv7 too: Debian armhf (armmp-lpae kernel) under qemu-system-arm -M virt, Cortex-A15."""
    need_root("mmdebstrap", "mke2fs", "ssh", "ssh-keygen", "qemu-system-arm", "qemu-img")
    vm.setup_vm("armv7")
    machine = vm.VM("armv7")
    was_running = machine.state() is not None
    try:
        r = VMTarget("armv7").bench(bundle, BENCH)
    finally:
        if not was_running:
            machine.stop()
    b = r["board"]
    assert r["target"] == "vm-armv7" and r["emulated"] is True
    assert b["machine"] == "armv7l" and b["model"] == "linux,dummy-virt"
    assert b["kernel"].endswith("armmp-lpae") and "cortex-a15" in r["emulation"]["model"]
    assert r["output_sha256"] == host_ref["output_sha256"]  # int8 outputs bit-identical
    assert r["accuracy"] == host_ref["accuracy"]
    assert r["robust"][0]["acc"] == host_ref["robust"][0]["acc"]  # Square's too
