"""Build and cache an emulated ARM userland (Raspberry-Pi-OS-like, Debian bookworm, Python 3.11).

``setup_qemu("aarch64")`` runs ``mmdebstrap --variant=extract`` with Debian's arm64/armhf packages,
adds PyPI wheels for the board (numpy + interpreters) under ``/opt/site`` and the qemu-user
binary that binfmt names, smoke-tests the Python inside with ``chroot``, and renames the finished
tree into ``~/.cache/robustedge/qemu/<arch>``. Idempotent (a ready tree is reused) and atomic (a
failed build leaves nothing). Needs root, qemu-user-static, binfmt-support and mmdebstrap:
``scripts/install-system-deps.sh`` installs them. stdlib only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from robustedge.cache import cache_dir, kind_env
from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

SUITE = "bookworm"
PYTHON = "/usr/bin/python3.11"
SITE = "/opt/site"
INSTALL_HINT = "run scripts/install-system-deps.sh as root"


@dataclass(frozen=True)
class ArchSpec:
    """What one emulated board userland holds."""

    debian_arch: str
    binfmt: str  # name under /proc/sys/fs/binfmt_misc
    debs: Tuple[str, ...]
    platforms: Tuple[str, ...]  # pip --platform tags for the wheels
    wheels: Tuple[str, ...]
    no_deps: bool


ARCHES: Dict[str, ArchSpec] = {
    "aarch64": ArchSpec(
        "arm64",
        "qemu-aarch64",
        ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgomp1"),
        (
            "manylinux2014_aarch64",
            "manylinux_2_17_aarch64",
            "manylinux_2_28_aarch64",
            "manylinux_2_34_aarch64",
        ),
        ("numpy==1.26.4", "tflite-runtime==2.14.0", "onnxruntime==1.23.0"),
        False,
    ),
    # No armv7 numpy wheels on PyPI: Debian's python3-numpy, plus tflite-runtime's wheel.
    "armv7": ArchSpec(
        "armhf",
        "qemu-arm",
        ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgomp1", "python3-numpy"),
        ("manylinux_2_34_armv7l",),
        ("tflite-runtime==2.14.0",),
        True,
    ),
}


# Bump when the userland's build steps or layout change in a way ARCHES does not show: the
# CI cache key (``cache_key``) then changes and old cached userlands are rebuilt.
CACHE_VERSION = 1


def cache_root() -> Path:
    """Where emulated userlands live: ``robustedge.cache.cache_dir("qemu")``
    (``$ROBUSTEDGE_CACHE/qemu`` when that is set, else ``$XDG_CACHE_HOME/robustedge/qemu``)."""
    root = cache_dir("qemu")
    if root is None:
        raise RobustEdgeError(f"the qemu userland cannot be turned off ({kind_env('qemu')}=off)")
    return root


def cache_key(arch: str) -> str:
    """The CI cache key of ``arch``'s userland, ``robustedge-qemu-aarch64-bookworm-v1-<hash>``:
    the hash covers everything the userland is built from (suite, Debian packages, pinned
    wheels and their platforms, the Python path, ``CACHE_VERSION``), so the key changes exactly
    when a cached userland would differ from a fresh build (Debian point releases aside)."""
    import hashlib

    spec = _spec(arch)
    recipe = {"version": CACHE_VERSION, "suite": SUITE, "python": PYTHON, "site": SITE}
    recipe.update(spec.__dict__)
    blob = json.dumps(recipe, sort_keys=True).encode()
    digest = hashlib.sha256(blob).hexdigest()[:16]
    return f"robustedge-qemu-{arch}-{SUITE}-v{CACHE_VERSION}-{digest}"


def rootfs_path(arch: str, root: Optional[Path] = None) -> Path:
    return (root or cache_root()) / arch / "rootfs"


def is_ready(arch: str, root: Optional[Path] = None) -> bool:
    """A finished userland exists for ``arch`` (its READY stamp was written last)."""
    return ((root or cache_root()) / arch / "READY.json").is_file()


def ready_key(arch: str, root: Optional[Path] = None) -> Optional[str]:
    """The cache key a finished userland was built for (None: built before keys were kept);
    a restored CI cache whose key differs from :func:`cache_key` is rebuilt by setup-qemu."""
    try:
        info = json.loads(((root or cache_root()) / arch / "READY.json").read_text())
    except (OSError, ValueError):
        return None
    key = info.get("cache_key") if isinstance(info, dict) else None
    return key if isinstance(key, str) else None


def binfmt_interpreter(name: str) -> Optional[str]:
    """The interpreter path binfmt uses for ``name``, or None when not registered/enabled."""
    entry = Path("/proc/sys/fs/binfmt_misc") / name
    try:
        text = entry.read_text()
    except OSError:
        return None
    if not text.startswith("enabled"):
        return None
    m = re.search(r"^interpreter (\S+)$", text, re.M)
    return m.group(1) if m else None


def check_emulation(arch: str) -> str:
    """Raise a one-line error unless binfmt runs ``arch`` binaries; return the interpreter path."""
    spec = _spec(arch)
    interp = binfmt_interpreter(spec.binfmt)
    if interp is None:
        raise RobustEdgeError(
            f"binfmt_misc has no enabled {spec.binfmt} entry, so {arch} binaries cannot run: "
            f"{INSTALL_HINT}"
        )
    return interp


def debian_mirror(sources: Optional[List[Path]] = None) -> str:
    """The Debian mirror apt is configured with (one-line or deb822 sources)."""
    paths = sources or [
        Path("/etc/apt/sources.list"),
        *sorted(Path("/etc/apt/sources.list.d").glob("*")),
    ]
    for p in paths:
        try:
            text = p.read_text()
        except OSError:
            continue
        for url in re.findall(r"^\s*(?:URIs:|deb(?:\s+\[[^\]]*\])?)\s+(\S+)", text, re.M):
            if re.search(r"/debian/?$", url):
                return url
    raise RobustEdgeError("no Debian mirror found in /etc/apt/sources.list(.d): cannot build")


def setup_qemu(arch: str, root: Optional[Path] = None, force: bool = False) -> Path:
    """Build (or reuse) the emulated userland for ``arch``; return its rootfs path."""
    spec = _spec(arch)
    root = root or cache_root()
    final = root / arch
    if is_ready(arch, root) and not force and ready_key(arch, root) in (None, cache_key(arch)):
        logger.info("reusing %s", final)
        return final / "rootfs"
    if os.geteuid() != 0:
        raise RobustEdgeError(
            f"setup-qemu needs root (mmdebstrap, chroot): run it as root; "
            f"system packages: {INSTALL_HINT}"
        )
    for tool in ("mmdebstrap", f"{spec.binfmt}-static"):
        if shutil.which(tool) is None:
            raise RobustEdgeError(f"'{tool}' not found: {INSTALL_HINT}")
    interp = check_emulation(arch)
    build_staged(final, lambda stage: _build(spec, stage / "rootfs", interp))
    return final / "rootfs"


def build_staged(final: Path, build: Callable[[Path], Dict[str, Any]]) -> None:
    """Build into a fresh stage folder beside ``final`` (``build(stage)`` returns what was
    built), write READY.json last, then swap the stage in: a failed build leaves nothing."""
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        info = build(stage)
        (stage / "READY.json").write_text(json.dumps(info, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _spec(arch: str) -> ArchSpec:
    if arch not in ARCHES:
        raise RobustEdgeError(f"unknown arch '{arch}' (known: {', '.join(sorted(ARCHES))})")
    return ARCHES[arch]


def _build(spec: ArchSpec, rootfs: Path, interp: str) -> dict:
    """Extract Debian's packages, add the board wheels and the emulator, smoke-test Python."""
    mirror = debian_mirror()
    extract_debs(spec.debian_arch, spec.debs, rootfs, mirror)
    if spec.debian_arch == "armhf":
        link_blas(rootfs)
    install_wheels(spec, rootfs / SITE.lstrip("/"))
    _copy_interpreter(spec, rootfs, interp)
    (rootfs / "tmp").mkdir(exist_ok=True)
    write_cpu_files(rootfs, spec)
    out = run_tool(chroot_command(rootfs, ["-c", PROBE]), "python smoke test in the rootfs")
    info = json.loads(out.strip().splitlines()[-1])
    info.update(arch=spec.debian_arch, suite=SUITE, mirror=mirror, wheels=list(spec.wheels))
    info["cache_key"] = cache_key(next(a for a, s in ARCHES.items() if s == spec))
    logger.info("built %s: %s", rootfs, info)
    return info


PROBE = (
    "import json, platform, numpy\n"
    "v = {'machine': platform.machine(), 'python': platform.python_version(),"
    " 'numpy': numpy.__version__}\n"
    "try:\n import tflite_runtime; v['tflite_runtime'] = tflite_runtime.__version__\n"
    "except ImportError: pass\nprint(json.dumps(v))"
)


def extract_debs(debian_arch: str, debs: Sequence[str], rootfs: Path, mirror: str) -> None:
    """``mmdebstrap --variant=extract``: unpack ``debs`` and their dependencies, run nothing."""
    run_tool(
        [
            "mmdebstrap",
            "--quiet",
            f"--arch={debian_arch}",
            "--variant=extract",
            f"--include={','.join(debs)}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        "mmdebstrap",
    )


def link_blas(rootfs: Path) -> None:
    """The alternatives symlinks armhf numpy needs (extract mode skips them)."""
    libdir = rootfs / "usr/lib/arm-linux-gnueabihf"
    for name in ("blas", "lapack"):
        link = libdir / f"lib{name}.so.3"
        if not link.exists():
            link.symlink_to(f"{name}/lib{name}.so.3")


def install_wheels(spec: ArchSpec, target: Path) -> None:
    """PyPI wheels for the board's platform into ``target`` (nothing runs: pip --target)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "--target",
        str(target),
    ]
    for tag in spec.platforms:
        cmd += ["--platform", tag]
    if spec.no_deps:
        cmd.append("--no-deps")
    run_tool(cmd + list(spec.wheels), "pip install (board wheels)")


def _copy_interpreter(spec: ArchSpec, rootfs: Path, interp: str) -> None:
    """binfmt without the F flag opens its interpreter inside the chroot: put it there."""
    target = rootfs / interp.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which(f"{spec.binfmt}-static") or interp, target)


CPU_LINES = {
    "arm64": "Features\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
    "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n",
    "armhf": "model name\t: ARMv7 Processor rev 3 (v7l)\nFeatures\t: half thumb fastmult vfp "
    "edsp neon vfpv3 tls vfpv4 idiva idivt\nCPU implementer\t: 0x41\nCPU architecture: 7\n"
    "CPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n",
}


def write_cpu_files(rootfs: Path, spec: ArchSpec, cpus: Optional[int] = None) -> None:
    """Plain files for what the chroot has no /proc and /sys for: an ARM-style /proc/cpuinfo
    whose ``Model`` says this is emulation, and the CPU lists onnxruntime's cpuinfo reads
    (without them it aborts). Nothing is mounted."""
    n = max(1, cpus or os.cpu_count() or 1)
    proc, cpu = rootfs / "proc", rootfs / "sys/devices/system/cpu"
    proc.mkdir(exist_ok=True)
    cpu.mkdir(parents=True, exist_ok=True)
    blocks = "".join(f"processor\t: {i}\n{CPU_LINES[spec.debian_arch]}\n" for i in range(n))
    model = f"Model\t\t: qemu-user emulation of {spec.debian_arch} (not a real board)\n"
    (proc / "cpuinfo").write_text(blocks + model)
    for name in ("possible", "present", "online"):
        (cpu / name).write_text(f"0-{n - 1}\n" if n > 1 else "0\n")


def chroot_command(rootfs: Path, args: List[str]) -> List[str]:
    """Argv that runs the rootfs' Python 3.11 (with the board wheels) under qemu-user."""
    return [
        "env",
        "-i",
        f"PYTHONPATH={SITE}",
        "HOME=/tmp",
        "PATH=/usr/bin:/bin",
        "LANG=C.UTF-8",
        shutil.which("chroot") or "/usr/sbin/chroot",
        str(rootfs),
        PYTHON,
        *args,
    ]


def run_tool(cmd: List[str], what: str) -> str:
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RobustEdgeError(f"{what} failed ({proc.returncode}): {' | '.join(tail)}")
    return proc.stdout
