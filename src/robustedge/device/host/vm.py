"""A full-system ARM VM as a board: build (once) a Debian image, boot it under qemu-system, SSH in.

``setup_vm("aarch64")`` unpacks Debian bookworm arm64 packages (kernel, OpenSSH server, Python
3.11, busybox-static) with ``mmdebstrap --variant=extract`` (no maintainer script runs under
emulation, which is what makes a configured image take ~36 minutes), adds the board wheels from
PyPI, writes the little configuration a board needs (users, sshd, a busybox ``init``), generates
the VM's host key and a client key, and packs an ext4 disk image (``mke2fs -d``, no loop mount)
plus a tiny initramfs that loads the virtio/ext4 modules and switches to the disk. The finished
image lives beside the qemu-user userlands (``cache_root()/vm-<arch>``), READY.json written last.

``VM(arch).start()`` boots it: ``qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 4 -m 2048``
(a Raspberry Pi 4's shape) with a copy-on-write overlay over the cached image, SSH forwarded to a
loopback port only. A running VM is found again through its state file and reused; ``stop()``
powers it off. Needs root to build (file ownership in the image), not to boot. stdlib only.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

from robustedge.device.host import qemu
from robustedge.device.host.vm_image import (  # noqa: F401 (USER, ready_info, VM_ARCHES: public here too)
    BOOT_TIMEOUT_S,
    GUEST_GW,
    GUEST_IP,
    INSTALL_HINT,
    USER,
    VM_ARCHES,
    VMSpec,
    build_image,
    check_build_tools,
    image_dir,
    is_ready,
    ready_info,
    run_tool,
    vm_spec,
    which_tool,
)
from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

SHARE_IDLE_S = 120  # a shared SSH session to the VM ends after this long unused
SOCKET_DIR_MAX = 80  # longer state folders: no shared session (unix socket paths are short)


def setup_vm(arch: str, root: Optional[Path] = None, force: bool = False) -> Path:
    """Build (or reuse) the VM image for ``arch``; return its folder. Atomic and idempotent."""
    spec = vm_spec(arch)
    final = image_dir(arch, root)
    if is_ready(arch, root) and not force:
        logger.info("reusing %s", final)
        return final
    check_build_tools(spec)
    qemu.build_staged(final, lambda stage: {**build_image(spec, stage), **boot_check(spec, stage)})
    return final


# ---------------------------------------------------------------------------------------------
# Running it


@dataclass
class VMState:
    """A booted VM, as recorded in ``<state dir>/state.json``."""

    arch: str
    pid: int
    port: int
    boot_s: float
    started: float


class VM:
    """One VM instance: an overlay over the cached image plus its state, in ``state_dir``
    (default ``<image dir>/run``). ``start`` reuses a running instance; ``stop`` powers off."""

    def __init__(
        self,
        arch: str,
        root: Optional[Path] = None,
        state_dir: Optional[Path] = None,
        image: Optional[Path] = None,
    ) -> None:
        self.spec = vm_spec(arch)
        self.image = image or image_dir(arch, root)
        if image is None and not is_ready(arch, root):  # (an explicit image: being built)
            raise RobustEdgeError(
                f"no {arch} VM image: run `robustedge device setup-vm --arch {arch}` as root first"
            )
        self.state_dir = state_dir or self.image / "run"
        self.key = self.image / "id_ed25519"

    # -- SSH details -------------------------------------------------------------------------

    def known_hosts(self, port: int) -> Path:
        path = self.state_dir / "known_hosts"
        kind, key = (self.image / "host_key.pub").read_text().split()[:2]
        path.write_text(f"[127.0.0.1]:{port} {kind} {key}\n")
        return path

    def ssh_options(self, state: VMState, shared: bool = True) -> List[str]:
        """OpenSSH options for this VM. ``shared``: the connections share one SSH session per
        user (a control master in the state folder, closed after ``SHARE_IDLE_S`` idle or by
        ``stop``): key exchange and login cost ~1.3 s of emulated CPU each, so without sharing
        every upload, run and probe pays them again. ``shared=False``: a connection of its own
        (what a check of the keys or of a dropped link needs)."""
        return [
            *(self._share_options() if shared else ["-o", "ControlPath=none"]),
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts(state.port)}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "LogLevel=ERROR",
        ]

    def _share_options(self) -> List[str]:
        path = self.state_dir / "cm-%r-%p"  # short: a unix socket path has ~100 bytes
        if len(str(self.state_dir)) > SOCKET_DIR_MAX:
            return ["-o", "ControlPath=none"]
        return [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={path}",
            "-o",
            f"ControlPersist={SHARE_IDLE_S}",
        ]

    def close_shared(self, state: VMState) -> None:
        """End the shared SSH sessions (their control masters) to this VM, if any."""
        for user in ("root", USER):
            sock = self.state_dir / f"cm-{user}-{state.port}"
            if sock.exists():
                cmd = ["ssh", *self.ssh_options(state), "-p", str(state.port), "-O", "exit"]
                subprocess.run([*cmd, f"{user}@127.0.0.1"], capture_output=True, timeout=20)

    def ssh_url(self, state: VMState, user: str = USER, path: str = "~/robustedge") -> str:
        return f"ssh://{user}@127.0.0.1:{state.port}/{path}"

    # -- lifecycle ---------------------------------------------------------------------------

    def state(self) -> Optional[VMState]:
        """The running instance, or None (a stale state file is removed)."""
        path = self.state_dir / "state.json"
        try:
            st = VMState(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if _alive(st.pid, self.spec.qemu_binary):
            return st
        path.unlink(missing_ok=True)
        return None

    def start(self, fresh: bool = False, timeout_s: float = BOOT_TIMEOUT_S) -> VMState:
        """Boot (or reuse) the VM and wait until SSH answers; ``fresh`` drops the overlay.
        One process at a time boots a given instance (a lock file in the state folder)."""
        import fcntl

        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._start(fresh, timeout_s)

    def _start(self, fresh: bool, timeout_s: float) -> VMState:
        st = self.state()
        if st is not None and not fresh:
            return st
        if st is not None:
            self.stop()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        overlay = self.state_dir / "overlay.qcow2"
        if fresh or not overlay.exists():
            overlay.unlink(missing_ok=True)
            run_tool(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw"]
                + ["-b", str(self.image / "disk.img"), str(overlay)],
                "qemu-img create",
            )
        port = _free_port()
        t0 = time.monotonic()
        proc = self._launch(overlay, port)
        st = VMState(self.spec.arch, proc.pid, port, 0.0, time.time())
        try:
            self._wait_ssh(st, proc, t0, timeout_s)
        except BaseException:
            _terminate(proc.pid)
            raise
        st.boot_s = round(time.monotonic() - t0, 1)
        (self.state_dir / "state.json").write_text(json.dumps(asdict(st)) + "\n")
        logger.info("VM %s up on 127.0.0.1:%d after %.1f s", self.spec.arch, port, st.boot_s)
        return st

    def qemu_command(self, overlay: Path, port: int) -> List[str]:
        s = self.spec
        return [
            which_tool(s.qemu_binary) or s.qemu_binary,
            "-M",
            s.machine,
            "-cpu",
            s.cpu,
            "-smp",
            str(s.smp),
            "-m",
            str(s.memory_mb),
            "-kernel",
            str(self.image / "vmlinuz"),
            "-initrd",
            str(self.image / "initrd.img"),
            "-append",
            f"console={s.console} rw quiet",
            "-drive",
            f"file={overlay},if=none,id=hd0,format=qcow2",
            "-device",
            "virtio-blk-device,drive=hd0",
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",  # loopback only
            "-device",
            "virtio-net-device,netdev=n0",
            "-device",
            "virtio-rng-device",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            f"file:{self.state_dir / 'console.log'}",
            "-no-reboot",
        ]

    def _launch(self, overlay: Path, port: int) -> subprocess.Popen:
        cmd = self.qemu_command(overlay, port)
        logger.info("starting %s", " ".join(cmd))
        with open(self.state_dir / "qemu.log", "wb") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self._proc = proc  # keeps the handle (and its exit status) for this process' lifetime
        return proc

    def _wait_ssh(self, st: VMState, proc: subprocess.Popen, t0: float, timeout_s: float) -> None:
        while time.monotonic() - t0 < timeout_s:
            if proc.poll() is not None:  # not _alive(): right after fork it is not qemu yet
                raise RobustEdgeError(f"the VM exited while booting: {self._log_tail()}")
            if self.ssh(st, "true", timeout=20, check=False).returncode == 0:
                return
            time.sleep(2)
        raise RobustEdgeError(f"no SSH from the VM after {timeout_s:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        for name in ("qemu.log", "console.log"):
            try:
                lines = (self.state_dir / name).read_text(errors="replace").strip().splitlines()
            except OSError:
                continue
            if lines:
                return f"{name}: {lines[-1]}"
        return "no console output"

    def ssh(
        self,
        st: VMState,
        script: str,
        user: str = "root",
        timeout: float = 600,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run ``script`` on the VM (as root by default, for set-up and tests)."""
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *self.ssh_options(st)]
        cmd += ["-p", str(st.port), f"{user}@127.0.0.1", script]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess(cmd, 255, "", f"timed out after {timeout} s")
        if check and proc.returncode != 0:
            raise RobustEdgeError(f"on the VM (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc

    def stop(self, timeout_s: float = 60) -> bool:
        """Power the VM off (busybox init syncs and unmounts first); False if none ran."""
        st = self.state()
        if st is None:
            return False
        self.ssh(st, "/bin/busybox poweroff", timeout=20, check=False)
        self.close_shared(st)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(st.pid, self.spec.qemu_binary):
            time.sleep(0.5)
        _terminate(st.pid)
        (self.state_dir / "state.json").unlink(missing_ok=True)
        return True


def boot_check(spec: VMSpec, image: Path) -> Dict[str, object]:
    """Boot a freshly built image once: SSH answers, Python and numpy import; boot time."""
    machine = VM(spec.arch, image=image)
    st = machine.start(fresh=True)
    try:
        probe = machine.ssh(st, f"python3 -c {shlex.quote(qemu.PROBE)}", user=USER).stdout
        info = json.loads(probe.strip().splitlines()[-1])
    finally:
        machine.stop()
        shutil.rmtree(machine.state_dir, ignore_errors=True)
    return {"boot_s": st.boot_s, "probe": info}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int, binary: str) -> bool:
    """``pid`` runs and is our emulator (not a recycled pid), and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return os.path.basename(argv0) == binary


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _terminate(pid: int) -> None:
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(pid)
            if not os.path.exists(f"/proc/{pid}"):
                return
            time.sleep(0.2)
    _reap(pid)
