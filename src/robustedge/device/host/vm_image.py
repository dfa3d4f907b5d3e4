"""The full-system ARM VM's image: what a board VM is (:class:`VMSpec`), and how its Debian image
is built (see :mod:`robustedge.device.host.vm` for the whole story and for booting it).

``build_image`` unpacks Debian bookworm packages with ``mmdebstrap --variant=extract``, adds the
board wheels, precompiles Python, writes the board's configuration (users, sshd, a busybox
``init``), keys, an initramfs that loads the virtio/ext4 modules, and packs an ext4 disk
(``mke2fs -d``, no loop mount). stdlib only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from robustedge.device.host import qemu
from robustedge.device.host.qemu import run_tool
from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

USER = "board"
UID = 1000
GUEST_IP, GUEST_GW = "10.0.2.15/24", "10.0.2.2"  # QEMU user networking's fixed addresses
DIST = "usr/local/lib/python3.11/dist-packages"  # where `pip install` puts wheels on a board
BOOT_TIMEOUT_S = 600
INSTALL_HINT = "run scripts/install-system-deps.sh as root"
# Guest modules the initramfs loads (their dependencies are read from the modules themselves).
MODULES = (
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio-rng",
    "crc32c_generic",
    "ext4",
)
BASE_DEBS = (
    "openssh-server",
    "python3-minimal",
    "python3.11-minimal",
    "libpython3.11-stdlib",
    "libstdc++6",
    "libgomp1",
    "busybox-static",
    "dash",
    "bash",
    "coreutils",
    "mount",
    "tar",
    "gzip",
    "grep",
    "sed",
    "findutils",
    "procps",
    "iproute2",
    "base-files",
    "base-passwd",
)


@dataclass(frozen=True)
class VMSpec:
    """One emulated board: Debian packages, the QEMU machine it boots on, and its wheels."""

    arch: str
    debian_arch: str
    kernel_deb: str
    extra_debs: Tuple[str, ...]
    qemu_binary: str
    machine: str
    cpu: str
    smp: int
    memory_mb: int
    console: str
    wheel_spec: str  # key of qemu.ARCHES whose wheels go into the image

    def __post_init__(self) -> None:
        if self.smp < 1 or self.memory_mb < 256:
            raise ValueError(f"VM needs >= 1 CPU and >= 256 MiB (got {self.smp}, {self.memory_mb})")

    @property
    def model(self) -> str:
        """The emulated machine in words (goes into the results next to ``emulated: true``)."""
        return (
            f"{self.qemu_binary} -M {self.machine} -cpu {self.cpu} -smp {self.smp} "
            f"-m {self.memory_mb} (full-system emulation)"
        )


VM_ARCHES: Dict[str, VMSpec] = {
    "aarch64": VMSpec(
        "aarch64",
        "arm64",
        "linux-image-arm64",
        (),
        "qemu-system-aarch64",
        "virt",
        "cortex-a72",
        4,
        2048,
        "ttyAMA0",
        "aarch64",
    ),
    "armv7": VMSpec(
        "armv7",
        "armhf",
        "linux-image-armmp-lpae",
        ("python3-numpy",),
        "qemu-system-arm",
        "virt",
        "cortex-a15",
        4,
        2048,
        "ttyAMA0",
        "armv7",
    ),
}


def vm_spec(arch: str) -> VMSpec:
    if arch not in VM_ARCHES:
        raise RobustEdgeError(f"unknown VM arch '{arch}' (known: {', '.join(sorted(VM_ARCHES))})")
    return VM_ARCHES[arch]


def image_dir(arch: str, root: Optional[Path] = None) -> Path:
    """``cache_root()/vm-<arch>``: disk.img, vmlinuz, initrd.img, keys, READY.json."""
    return (root or qemu.cache_root()) / f"vm-{arch}"


def is_ready(arch: str, root: Optional[Path] = None) -> bool:
    return (image_dir(arch, root) / "READY.json").is_file()


def ready_info(arch: str, root: Optional[Path] = None) -> Dict[str, object]:
    return json.loads((image_dir(arch, root) / "READY.json").read_text())


# ---------------------------------------------------------------------------------------------
# Building the image


def check_build_tools(spec: VMSpec) -> None:
    if os.geteuid() != 0:
        raise RobustEdgeError(
            "setup-vm needs root (the image's files must belong to root): run it as root; "
            f"system packages: {INSTALL_HINT}"
        )
    for tool in ("mmdebstrap", "mke2fs", "ssh-keygen", spec.qemu_binary, "qemu-img"):
        if which_tool(tool) is None:
            raise RobustEdgeError(f"'{tool}' not found: {INSTALL_HINT}")


def which_tool(tool: str) -> Optional[str]:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def build_image(spec: VMSpec, out: Path) -> Dict[str, object]:
    """Rootfs -> disk.img + vmlinuz + initrd.img + keys in ``out``; returns what was built."""
    t0 = time.monotonic()
    rootfs = out / "rootfs"
    mirror = qemu.debian_mirror()
    debs = (spec.kernel_deb, *BASE_DEBS, *spec.extra_debs)
    qemu.extract_debs(spec.debian_arch, debs, rootfs, mirror)
    if spec.debian_arch == "armhf":
        qemu.link_blas(rootfs)
    wheels = qemu.ARCHES[spec.wheel_spec]
    qemu.install_wheels(wheels, rootfs / DIST)
    precompile(rootfs)
    kver = _kernel_version(rootfs)
    shutil.copy2(rootfs / "boot" / f"vmlinuz-{kver}", out / "vmlinuz")
    write_initramfs(rootfs, kver, out / "initrd.img")
    configure_rootfs(rootfs, out)
    _slim(rootfs, kver)
    size_mb = max(1024, 2 * _tree_mb(rootfs) + 512)  # room for bundles and results
    run_tool(
        [which_tool("mke2fs") or "mke2fs", "-q", "-t", "ext4", "-L", "board", "-d", str(rootfs)]
        + ["-E", "root_owner=0:0", str(out / "disk.img"), f"{size_mb}M"],
        "mke2fs",
    )
    shutil.rmtree(rootfs)
    return {
        "arch": spec.arch,
        "debian_arch": spec.debian_arch,
        "suite": qemu.SUITE,
        "mirror": mirror,
        "kernel": kver,
        "wheels": list(wheels.wheels),
        "model": spec.model,
        "disk_mb": size_mb,
        "disk_used_mb": round(_allocated(out / "disk.img") / 2**20, 1),
        "initrd_kb": round((out / "initrd.img").stat().st_size / 1024, 1),
        "build_s": round(time.monotonic() - t0, 1),
    }


PY_DIRS = ("usr/lib/python3.11", "usr/lib/python3/dist-packages", DIST)
# Test suites and GUI/tooling packages a board run never imports: not worth compiling.
NOT_IMPORTED = re.compile(r"/(tests?|idlelib|tkinter|turtledemo|lib2to3|ensurepip|tools)/")


def precompile(rootfs: Path) -> None:
    """Byte-compile the board's Python files on the host (same 3.11 bytecode; recorded paths
    as seen on the board). Extract mode runs no py3compile, and the board user cannot write
    root's __pycache__: without this every ``import numpy`` compiles ~150 modules under
    emulation (26 s instead of a few)."""
    import compileall
    import sys

    if sys.version_info[:2] != (3, 11):
        logger.warning("host Python is not 3.11: the image's Python files stay uncompiled")
        return
    for rel in PY_DIRS:
        d = rootfs / rel
        if d.is_dir():
            compileall.compile_dir(
                str(d),
                quiet=2,
                workers=0,
                rx=NOT_IMPORTED,
                stripdir=str(rootfs),
                prependdir="/",
            )


def _kernel_version(rootfs: Path) -> str:
    versions = sorted(p.name for p in (rootfs / "lib/modules").iterdir())
    if not versions:
        raise RobustEdgeError(f"no kernel modules in {rootfs}/lib/modules")
    return versions[-1]


def _tree_mb(root: Path) -> int:
    total = sum(p.lstat().st_size for p in root.rglob("*") if not p.is_symlink() and p.is_file())
    return total // 2**20 + 1


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def _slim(rootfs: Path, kver: str) -> None:
    """Drop what a headless board never reads (docs, man pages, locales, unused modules)."""
    for rel in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info"):
        shutil.rmtree(rootfs / rel, ignore_errors=True)
    shutil.rmtree(rootfs / "lib/modules" / kver / "kernel", ignore_errors=True)


# -- kernel modules and the initramfs ---------------------------------------------------------


def module_index(moddir: Path) -> Dict[str, Path]:
    """Module name (``-`` and ``_`` alike) -> its .ko file."""
    return {p.name[: -len(".ko")].replace("-", "_"): p for p in moddir.rglob("*.ko")}


def module_depends(ko: Path) -> List[str]:
    """The ``depends=`` list from a module's .modinfo section (null-separated key=value)."""
    data = ko.read_bytes()
    for field in data.split(b"\0"):
        if field.startswith(b"depends="):
            return [d for d in field[8:].decode().split(",") if d]
    return []


def load_order(names: Iterable[str], index: Dict[str, Path]) -> List[Path]:
    """Modules to insmod, dependencies first; names that are built in are skipped."""
    order: List[Path] = []
    seen = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in seen or key not in index:
            return
        seen.add(key)
        for dep in module_depends(index[key]):
            visit(dep)
        order.append(index[key])

    for n in names:
        visit(n)
    return order


INITRAMFS_INIT = """#!/bin/busybox sh
# robustedge board initramfs: load the virtio/ext4 modules, mount /dev/vda, switch to it.
B=/bin/busybox
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc
$B mount -t devtmpfs devtmpfs /dev
for m in {modules}; do $B insmod /modules/$m || echo "initramfs: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do $B sleep 0.1; i=$((i+1)); done
$B mount -t ext4 -o rw /dev/vda /newroot || {{ echo "initramfs: cannot mount /dev/vda"; \
$B poweroff -f; }}
$B umount /proc
$B mount --move /dev /newroot/dev 2>/dev/null || $B umount /dev
exec $B switch_root /newroot /bin/busybox init
"""


def write_initramfs(rootfs: Path, kver: str, out: Path) -> None:
    """A newc cpio: busybox-static, the needed modules in load order, and ``/init``."""
    index = module_index(rootfs / "lib/modules" / kver / "kernel")
    mods = load_order(MODULES, index)
    missing = [m for m in ("virtio_blk", "ext4") if m not in index]
    if missing:
        raise RobustEdgeError(f"kernel {kver} has no module(s) {', '.join(missing)}")
    init = INITRAMFS_INIT.format(modules=" ".join(p.name for p in mods))
    entries: List[Tuple[str, int, bytes]] = [
        ("bin", stat.S_IFDIR | 0o755, b""),
        ("modules", stat.S_IFDIR | 0o755, b""),
        ("dev", stat.S_IFDIR | 0o755, b""),
        ("dev/console", stat.S_IFCHR | 0o600, b""),
        ("bin/busybox", stat.S_IFREG | 0o755, (rootfs / "bin/busybox").read_bytes()),
        ("init", stat.S_IFREG | 0o755, init.encode()),
    ]
    entries += [(f"modules/{p.name}", stat.S_IFREG | 0o644, p.read_bytes()) for p in mods]
    out.write_bytes(newc_archive(entries))


def newc_archive(entries: Sequence[Tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the kernel's initramfs format (``newc``), all files owned by root.
    ``dev/console`` is the character device 5:1 the kernel opens before /init runs."""
    parts = []
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        rdev = (5, 1) if name == "dev/console" else (0, 0)
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name) + 1, 0]
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        parts.append(head + b"\0" * (-len(head) % 4))
        parts.append(data + b"\0" * (-len(data) % 4))
    return b"".join(parts)


# -- configuration written into the image ------------------------------------------------------

RC = """#!/bin/sh
# robustedge board: mount the kernel file systems, bring up the network, start sshd.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -o remount,rw /
hostname robustedge-board
ip link set lo up
ip link set eth0 up
ip addr add {ip} dev eth0
ip route add default via {gw}
mkdir -p /run/sshd
chmod 0755 /run/sshd
echo "robustedge-board: up" > /dev/console
"""

INITTAB = """::sysinit:/etc/robustedge/rc.sh
::respawn:/usr/sbin/sshd -D -e
::shutdown:/bin/busybox sync
::shutdown:/bin/busybox umount -a -r
"""

SSHD_CONFIG = """Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys
Subsystem sftp internal-sftp
AcceptEnv LANG
"""


def configure_rootfs(rootfs: Path, out: Path) -> None:
    """Users, sshd, busybox init and keys: what package configuration would have done."""
    etc = rootfs / "etc"
    _write_accounts(rootfs)
    (etc / "robustedge").mkdir(exist_ok=True)
    _write(etc / "robustedge/rc.sh", RC.format(ip=GUEST_IP, gw=GUEST_GW), 0o755)
    _write(etc / "inittab", INITTAB)
    _write(etc / "hostname", "robustedge-board\n")
    _write(etc / "hosts", "127.0.0.1 localhost robustedge-board\n")
    _write(etc / "fstab", "/dev/vda / ext4 rw 0 1\n")
    (etc / "ssh").mkdir(exist_ok=True)
    _write(etc / "ssh/sshd_config", SSHD_CONFIG)
    _keygen(out / "host_key", "robustedge-board host key")
    shutil.copy2(out / "host_key", etc / "ssh/ssh_host_ed25519_key")
    shutil.copy2(out / "host_key.pub", etc / "ssh/ssh_host_ed25519_key.pub")
    os.chmod(etc / "ssh/ssh_host_ed25519_key", 0o600)
    client = _keygen(out / "id_ed25519", "robustedge client")
    for home, uid in ((rootfs / "root", 0), (rootfs / "home" / USER, UID)):
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        _write(home / ".ssh/authorized_keys", client + "\n", 0o600)
        for p in (home, home / ".ssh", home / ".ssh/authorized_keys"):
            os.chown(p, uid, uid)
        os.chmod(home / ".ssh", 0o700)
    for d in ("proc", "sys", "dev", "run", "tmp", "var/empty", "usr/local/bin"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)


def _write_accounts(rootfs: Path) -> None:
    """passwd/group/shadow from base-passwd's masters, plus sshd's user and the board user."""
    share = rootfs / "usr/share/base-passwd"
    passwd = (share / "passwd.master").read_text()
    group = (share / "group.master").read_text()
    passwd += "sshd:x:101:65534::/run/sshd:/usr/sbin/nologin\n"
    passwd += f"{USER}:x:{UID}:{UID}::/home/{USER}:/bin/bash\n"
    group += f"{USER}:x:{UID}:\n"
    names = [line.split(":")[0] for line in passwd.splitlines() if line]
    shadow = "".join(f"{n}:*:19000:0:99999:7:::\n" for n in names)  # '*': no password, key ok
    _write(rootfs / "etc/passwd", passwd)
    _write(rootfs / "etc/group", group)
    _write(rootfs / "etc/shadow", shadow, 0o640)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chmod(path, mode)


def _keygen(path: Path, comment: str) -> str:
    run_tool(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        "ssh-keygen",
    )
    return path.with_suffix(".pub").read_text().strip()
