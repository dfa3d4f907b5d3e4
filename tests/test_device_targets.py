"""Device targets for real: QEMU-emulated ARM userlands (chroot) and an SSH "board" on
127.0.0.1 whose login python3 is the emulated aarch64 Python. Needs root and the packages from
``scripts/install-system-deps.sh`` (CI has both); skips with that reason otherwise."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from robustedge.device.board.bundle_format import verify_bundle
from robustedge.device.host import qemu
from robustedge.device.host.targets import QemuTarget, SSHTarget
from robustedge.errors import RobustEdgeError
from test_device import bundle, copy_bundle  # noqa: F401  (shared fixtures)

HINT = "run scripts/install-system-deps.sh as root, and the tests as root"
BENCH = ["--reference-kernels", "--runs", "200", "--square-queries", "20", "--square-n", "10"]


def need_root(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {HINT}")
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in tools if shutil.which(t, path=path) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: {HINT}")


def rootfs(arch: str) -> Path:
    """The cached emulated userland, built on first use (needs Debian + PyPI access)."""
    need_root("mmdebstrap", "chroot", f"{qemu.ARCHES[arch].binfmt}-static")
    if qemu.binfmt_interpreter(qemu.ARCHES[arch].binfmt) is None:
        pytest.skip(f"binfmt_misc has no {qemu.ARCHES[arch].binfmt} entry: {HINT}")
    return qemu.setup_qemu(arch)


@pytest.fixture(scope="session")
def host_ref(device_host_ref):
    """The bundle on the host with the board's interpreter (conftest.py, once per worker)."""
    return device_host_ref


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["aarch64", "armv7"])
def test_qemu_matches_host_bit_for_bit(arch, bundle, host_ref):  # noqa: F811
    rootfs(arch)
    r = QemuTarget(arch).bench(bundle, BENCH)
    machine = {"aarch64": "aarch64", "armv7": "armv7l"}[arch]
    assert r["board"]["machine"] == machine and r["target"] == f"qemu-{arch}"
    assert r["emulated"] is True and r["latency"]["emulated"] is True and r["latency_note"]
    assert r["backend"] == "tflite-runtime" and r["kernels"] == "BUILTIN_REF"
    assert r["output_sha256"] == host_ref["output_sha256"]  # int8 outputs identical
    parity = verify_bundle(bundle)["formats"]["tflite-int8"]["parity"]
    assert r["accuracy"]["clean"] == pytest.approx(parity["clean_acc"], abs=1e-12)
    assert r["accuracy"] == host_ref["accuracy"]
    assert r["robust"][0]["acc"] == host_ref["robust"][0]["acc"]


@pytest.mark.qemu
@pytest.mark.slow
def test_qemu_aarch64_onnxruntime(bundle):  # noqa: F811
    rootfs("aarch64")
    r = QemuTarget("aarch64").bench(
        bundle, ["--format", "onnx", "--runs", "200", "--square-queries", "0"]
    )
    assert r["backend"] == "onnxruntime" and r["board"]["machine"] == "aarch64"
    assert "emulation" in r["board"]["cpu_model"]
    assert all(p["equal"] for p in r["parity"].values())  # same accuracy as the host's ORT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


class Board:
    """A loopback sshd with one key-only test user (see the module docstring)."""

    def __init__(self, etc: Path, home: Path, user: str, port: int) -> None:
        self.etc, self.home, self.user, self.port = etc, home, user, port

    def config(self, key: str = "id_ed25519", known_hosts: str = "known_hosts") -> str:
        path = self.etc / f"config-{key}-{known_hosts}"
        path.write_text(
            f"Host board\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
            f"  IdentityFile {self.etc / key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.etc / known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
        )
        return str(path)

    def target(self, path: str = "~/bundles", python: str = "python3", **kw) -> SSHTarget:
        return SSHTarget(f"ssh://board/{path}", ["-F", self.config(**kw)], python=python)


def _write_wrappers(home: Path, root: Path) -> None:
    binary = shutil.which("qemu-aarch64-static")
    run = f'{binary} -L {root} {root}/usr/bin/python3.11 "$@"'
    (home / "bin").mkdir()
    (home / "bin" / "python3").write_text(f"#!/bin/sh\nPYTHONPATH={root}/opt/site exec {run}\n")
    (home / "bin" / "python3-bare").write_text(f"#!/bin/sh\nexec {run}\n")  # no numpy
    for w in ("python3", "python3-bare"):
        (home / "bin" / w).chmod(0o755)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    need_root("sshd", "ssh", "ssh-keygen", "useradd", "usermod", "userdel", "qemu-aarch64-static")
    root = rootfs("aarch64")
    user = f"rebench{os.getpid() % 100000}"
    etc = tmp_path_factory.mktemp("sshd")
    home = Path(tempfile.mkdtemp(prefix="robustedge-board-", dir="/tmp"))
    proc = None
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", user], check=True)
    try:
        subprocess.run(["usermod", "-p", "*", user], check=True)
        _keygen(etc / "host_key")
        client = _keygen(etc / "id_ed25519")
        _keygen(etc / "id_other")
        (home / ".ssh").mkdir()
        (home / ".ssh" / "authorized_keys").write_text(client + "\n")
        user_root = home / "rootfs"  # the user cannot read /root/.cache: hard-link a copy
        if subprocess.run(["cp", "-al", str(root), str(user_root)]).returncode != 0:
            subprocess.run(["cp", "-a", str(root), str(user_root)], check=True)
        _write_wrappers(home, user_root)
        subprocess.run(["chown", "-R", f"{user}:", str(home)], check=True)
        os.chmod(home / ".ssh", 0o700)
        port = _free_port()
        host_pub = (etc / "host_key.pub").read_text().split()
        (etc / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        (etc / "empty_known_hosts").write_text("")
        (etc / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {etc / 'host_key'}\n"
            f"PidFile {etc / 'sshd.pid'}\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\n"
            f"AuthorizedKeysFile {home}/.ssh/authorized_keys\nAllowUsers {user}\n"
            f"SetEnv PATH={home}/bin:/usr/bin:/bin\n"
        )
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        sshd = shutil.which("sshd", path=os.environ.get("PATH", "") + ":/usr/sbin")
        proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(etc / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _wait_port(port, proc)
        yield Board(etc, home, user, port)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        subprocess.run(["userdel", user], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read().decode()[-500:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("sshd did not start listening")


@pytest.mark.ssh
@pytest.mark.slow
def test_ssh_bench_on_emulated_aarch64(board, bundle, host_ref, cli, tmp_path):  # noqa: F811
    out = tmp_path / "ssh.json"
    proc = cli(
        "bench",
        "--bundle",
        str(bundle),
        "--target",
        "ssh://board/~/bundles",
        "--ssh-config",
        board.config(),
        "--out",
        str(out),
        *BENCH,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    r = json.loads(out.read_text())
    assert r["board"]["machine"] == "aarch64" and r["emulated"] is True
    assert r["output_sha256"] == host_ref["output_sha256"]
    live = board.home / "bundles" / bundle.name
    assert verify_bundle(live) and not list((board.home / "bundles").glob(".upload*"))


@pytest.mark.ssh
@pytest.mark.slow
def test_ssh_refusals(board, bundle, tmp_path):  # noqa: F811
    with pytest.raises(RobustEdgeError, match="Permission denied"):
        board.target(key="id_other").deploy(bundle)
    with pytest.raises(RobustEdgeError, match="Host key verification failed"):
        board.target(known_hosts="empty_known_hosts").deploy(bundle)
    good = board.target()
    live = Path(good.deploy(bundle))
    # A board without numpy: the runner (on the bundle deployed above) says what to install.
    with pytest.raises(RobustEdgeError, match="pip install numpy"):
        board.target(python="python3-bare").run(str(live), ["--runs", "200"])
    # `deploy --python`: the board verifies the upload with that python (the default python3
    # deployed above); one the board does not have refuses the upload and nothing goes live
    from click.testing import CliRunner

    from robustedge.commands.device import deploy_cmd

    args = [str(bundle), "--target", "ssh://board/~/py", "--ssh-config", board.config()]
    r = CliRunner().invoke(deploy_cmd, [*args, "--python", "python3-missing"])
    assert r.exit_code != 0 and "python3-missing: not found" in str(r.exception), r.output
    assert not (board.home / "py" / bundle.name).exists()
    # A tampered upload is refused on the board and the live bundle stays as it was.
    bad = copy_bundle(bundle, tmp_path)
    (bad / "square_core.py").write_text("raise SystemExit\n")
    with pytest.raises(RobustEdgeError, match="tampered"):
        good.deploy(bad)
    assert verify_bundle(live) and not list(live.parent.glob(".upload*"))


@pytest.mark.ssh
@pytest.mark.slow
def test_ssh_disk_full_leaves_nothing(board, bundle):  # noqa: F811
    full = board.home / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
    try:
        subprocess.run(["chown", f"{board.user}:", str(full)], check=True)
        with pytest.raises(RobustEdgeError, match="No space left"):
            board.target(path="~/full").deploy(bundle)
        assert list(full.iterdir()) == []
    finally:
        subprocess.run(["umount", str(full)], check=True)
