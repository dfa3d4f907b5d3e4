"""Where a bundle runs: ``local`` (or a local path such as a mounted SD card's root file system),
``ssh://user@host[:port][/path]`` (system OpenSSH), ``qemu-aarch64`` / ``qemu-armv7`` (chroot into
an emulated userland under qemu-user), ``vm-aarch64`` / ``vm-armv7`` (a full-system QEMU VM
reached over SSH on a loopback port).

``TARGETS`` is the only list of target names: each entry is a :class:`Target` class that says
whether it is emulated, which interpreter families (so which export formats) it can run and
which target strings besides its name it takes (``ssh://...``, local paths).
:func:`target_class` resolves a target string without building anything (the recipe
validates through it); :func:`make_target` builds it.

Every target installs atomically: the bundle goes to a temporary folder beside its final place,
is verified there (sha256 of every file), and only then renamed into place, so an interrupted
upload never leaves a half bundle live. Nothing is installed on a board besides the bundle.
stdlib only.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Type, Union
from urllib.parse import SplitResult, urlsplit

from robustedge import jsonsafe
from robustedge.device.board.bundle_format import ENTRY, swap_in_bundle, verify_bundle
from robustedge.device.board.config import BenchConfig
from robustedge.device.host import qemu, vm
from robustedge.errors import RobustEdgeError, UnknownNameError
from robustedge.export.formats import FORMATS, Family, board_order
from robustedge.registry import Registry

logger = logging.getLogger(__name__)

TARGETS: Registry[Type[Target]] = Registry("target")
RESULTS = "results.json"
NO_PYTHON = "robustedge-probe: no python"
ALL_FAMILIES = tuple(f.value for f in Family)  # interpreter families (onnxruntime, TFLite)
BenchSettings = Union[BenchConfig, Sequence[str], None]


class Target:
    """A place that can hold a bundle (``deploy``) and run it (``run``).

    Class attributes describe the kind of target before one is built (``target_class``):
    ``emulated`` (its latency is not a board's), ``families`` (the interpreter families it
    runs, hence :meth:`formats`: the registered export formats of those families),
    ``ssh_settings`` (whether ssh options apply), and two that only the
    class declaring them has (a subclass registered under its own name does not inherit them):
    ``prefixes`` (target strings it takes besides its name) and ``usage`` (how to write it, for
    help texts; default: the name)."""

    name = "target"
    emulated: ClassVar[bool] = False
    families: ClassVar[Tuple[str, ...]] = ALL_FAMILIES
    prefixes: ClassVar[Tuple[str, ...]] = ()
    usage: ClassVar[str] = ""
    ssh_settings: ClassVar[bool] = False

    @classmethod
    def formats(cls) -> Tuple[str, ...]:
        """The registered export formats this target can run, a board's preference first."""
        return tuple(f for f in board_order() if FORMATS[f].family.value in cls.families)

    @classmethod
    def from_spec(cls, spec: str, **kw: Any) -> Target:
        """Build the target for target string ``spec`` (``kw``: python, ssh_options,
        qemu_root; each target takes what applies to it)."""
        raise NotImplementedError

    @classmethod
    def check_spec(cls, spec: str) -> None:
        """Refuse a malformed target string now (RobustEdgeError), before anything is built."""

    def deploy(self, bundle: Path) -> str:
        """Install ``bundle`` atomically; return its path on the target."""
        raise NotImplementedError

    def run(self, where: str, args: Sequence[str]) -> Dict[str, Any]:
        """Run an installed bundle with runner ``args``; return the results dict."""
        raise NotImplementedError

    def bench(self, bundle: Path, cfg: BenchSettings = None) -> Dict[str, Any]:
        """Deploy, run with ``cfg`` (a BenchConfig; runner arguments are parsed into one, so
        they are checked the same way; None: the defaults), fetch: the results dict, tagged
        with this target."""
        cfg = bench_config(cfg)
        if self.emulated and not cfg.emulated:
            cfg = cfg.replace(emulated=True)
        t0 = time.perf_counter()
        where = self.deploy(bundle)
        upload_s = round(time.perf_counter() - t0, 3)
        results = self.run(where, cfg.to_argv())
        if not isinstance(results, dict):  # a board's answer is data, checked before use
            raise RobustEdgeError(f"{self.name} returned malformed results (not a JSON object)")
        results["target"] = self.name
        results["emulated"] = bool(results.get("emulated")) or self.emulated
        results["upload_s"] = upload_s
        return results

    def python_probe(self, source: str) -> Optional[str]:
        """Run Python ``source`` with the target's python3; its stdout, or None when the target
        has no such Python (``robustedge device doctor``)."""
        raise NotImplementedError


def bench_config(cfg: BenchSettings) -> BenchConfig:
    """``cfg`` as a BenchConfig: itself, the defaults (None), or runner arguments parsed."""
    if isinstance(cfg, BenchConfig):
        return cfg
    return BenchConfig() if cfg is None else BenchConfig.from_argv(list(cfg))


def install_dir(bundle: Path, parent: Path) -> Path:
    """Copy ``bundle`` to ``parent/<name>`` via a verified temporary sibling; return it."""
    final = parent / bundle.name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".upload.{bundle.name}.", dir=parent))
    except OSError as e:
        raise RobustEdgeError(f"cannot write to {parent}: {e.strerror or e}") from None
    try:
        shutil.copytree(bundle, tmp / bundle.name)
        verify_bundle(tmp / bundle.name)
        swap_in_bundle(tmp / bundle.name, final)
    except OSError as e:
        raise RobustEdgeError(
            f"copy to {parent} failed ({e.strerror or e}); nothing was installed"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _run_local(cmd: List[str], where: str, results_path: Path) -> Dict[str, Any]:
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RobustEdgeError(
            f"bundle run on {where} failed (exit {proc.returncode}): "
            f"{_last_line(proc.stderr or proc.stdout)}"
        )
    return json.loads(results_path.read_text())


KEY_ERRORS = (
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "Permission denied",
    "error:",
)


def _last_line(text: str) -> str:
    """The line that explains a failure: a known cause if any line names one, else the last."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    for key in KEY_ERRORS:
        hits = [ln for ln in lines if key in ln]
        if hits:
            return hits[-1] + (" (the board's disk is full)" if "No space" in key else "")
    return lines[-1] if lines else "no output"


@TARGETS.register("local")
class LocalTarget(Target):
    """This machine; with ``dest`` set, a folder (e.g. a mounted SD card's ``/home/pi``)."""

    name = "local"
    prefixes = ("/", "./", "../", "file://")
    usage = "local | a local folder (e.g. a mounted SD card)"

    @classmethod
    def from_spec(cls, spec: str, **kw: Any) -> Target:
        dest = spec.replace("file://", "", 1) if spec.startswith(cls.prefixes) else None
        return cls(dest, python=kw.get("python"))

    def __init__(self, dest: Optional[str] = None, python: Optional[str] = None) -> None:
        self.dest = Path(dest) if dest else None
        self.python = python or sys.executable

    def deploy(self, bundle: Path) -> str:
        if self.dest is None:  # run in place: the runner verifies before it runs
            return str(bundle)
        if not self.dest.parent.is_dir():  # e.g. an SD card that is not mounted
            raise RobustEdgeError(f"{self.dest.parent} does not exist (is the card mounted?)")
        return str(install_dir(bundle, self.dest))

    def run(self, where: str, args: Sequence[str]) -> Dict[str, Any]:
        out = Path(where) / RESULTS
        return _run_local(
            [self.python, str(Path(where) / ENTRY), *args, "--out", str(out)], "local", out
        )

    def python_probe(self, source: str) -> Optional[str]:
        if shutil.which(self.python) is None:
            return None
        proc = subprocess.run([self.python, "-"], input=source, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RobustEdgeError(f"probe on local failed: {_last_line(proc.stderr)}")
        return proc.stdout

    @property
    def base(self) -> str:
        return str(self.dest or Path.cwd())


class QemuTarget(Target):
    """The emulated userland from ``robustedge device setup-qemu --arch ARCH`` (chroot)."""

    emulated = True
    BOARD_DIR = "/opt/robustedge/bundles"
    arch: ClassVar[str] = ""  # set by the registered subclasses

    @classmethod
    def from_spec(cls, spec: str, **kw: Any) -> Target:
        return cls(cls.arch, kw.get("qemu_root"))

    def __init__(self, arch: str, root: Optional[Path] = None) -> None:
        self.arch, self.name = arch, f"qemu-{arch}"  # type: ignore[misc]
        self.rootfs = qemu.rootfs_path(arch, root)
        if not qemu.is_ready(arch, root):
            raise RobustEdgeError(
                f"no emulated {arch} userland: run `robustedge device "
                f"setup-qemu --arch {arch}` as root first"
            )
        if os.geteuid() != 0:
            raise RobustEdgeError(f"the {self.name} target needs root (chroot)")
        qemu.check_emulation(arch)

    def deploy(self, bundle: Path) -> str:
        final = install_dir(bundle, self.rootfs / self.BOARD_DIR.lstrip("/"))
        return f"{self.BOARD_DIR}/{final.name}"

    def run(self, where: str, args: Sequence[str]) -> Dict[str, Any]:
        qemu.write_cpu_files(self.rootfs, qemu.ARCHES[self.arch])  # this host's CPU count
        out = f"{where}/{RESULTS}"
        cmd = qemu.chroot_command(self.rootfs, [f"{where}/{ENTRY}", *args, "--out", out])
        return _run_local(cmd, self.name, self.rootfs / out.lstrip("/"))

    @property
    def base(self) -> str:
        return str(self.rootfs / self.BOARD_DIR.lstrip("/"))

    def python_probe(self, source: str) -> Optional[str]:
        qemu.write_cpu_files(self.rootfs, qemu.ARCHES[self.arch])
        cmd = qemu.chroot_command(self.rootfs, ["-"])
        proc = subprocess.run(cmd, input=source, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RobustEdgeError(f"probe on {self.name} failed: {_last_line(proc.stderr)}")
        return proc.stdout


@TARGETS.register("ssh")
class SSHTarget(Target):
    """A board over OpenSSH (BatchMode, strict host key checking as configured)."""

    prefixes = ("ssh://",)
    usage = "ssh://user@host[:port][/path]"
    ssh_settings = True

    @classmethod
    def from_spec(cls, spec: str, **kw: Any) -> Target:
        return cls(
            spec, ssh_options=kw.get("ssh_options") or (), python=kw.get("python") or "python3"
        )

    @classmethod
    def check_spec(cls, spec: str) -> None:
        parse_ssh_url(spec)

    def __init__(
        self,
        url: str,
        ssh_options: Sequence[str] = (),
        python: str = "python3",
        connect_timeout: int = 15,
    ) -> None:
        u = parse_ssh_url(url)
        self.name = url
        self.dest = f"{u.username}@{u.hostname}" if u.username else u.hostname
        # ssh://h/abs/path is absolute; ssh://h/~/dir (or no path: ~/robustedge) is under home
        path = u.path.rstrip("/")
        self.base = path[3:] if path.startswith("/~/") else (path or "robustedge")
        self.python = python
        self.ssh = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={connect_timeout}",
            *ssh_options,
            *(["-p", str(u.port)] if u.port else []),
        ]
        if shutil.which("ssh") is None:
            raise RobustEdgeError("no OpenSSH client ('ssh') on this machine")

    def _ssh(self, script: str, stdin: Optional[bytes] = None) -> bytes:
        cmd = [*self.ssh, self.dest, script]
        logger.info("ssh %s: %s", self.dest, script)
        proc = subprocess.run(cmd, input=stdin, capture_output=True)
        err = proc.stderr.decode(errors="replace")
        if proc.returncode == 255:
            raise RobustEdgeError(f"ssh to {self.dest} failed: {_last_line(err)}")
        if proc.returncode != 0:
            raise RobustEdgeError(f"on {self.dest} (exit {proc.returncode}): {_last_line(err)}")
        return proc.stdout

    def deploy(self, bundle: Path) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(bundle, arcname=bundle.name)
        return self._ssh(self.deploy_script(bundle.name), buf.getvalue()).decode().splitlines()[-1]

    def deploy_script(self, name: str) -> str:
        """Shell run on the board: untar stdin into a temporary sibling, verify it there with
        the board's Python, then swap it in; a dropped connection (HUP) cleans up and leaves
        the live bundle untouched."""
        q = shlex.quote
        base, name, py = q(self.base), q(name), q(self.python)
        return (
            f"set -e; umask 022; mkdir -p {base}; "
            f't=$(mktemp -d {base}/.upload.XXXXXX); t=$(cd "$t" && pwd); '
            f"trap 'rm -rf \"$t\"' EXIT; trap 'exit 1' HUP INT TERM PIPE; "
            f'tar -xf - -C "$t"; '
            f'{py} "$t"/{name}/{ENTRY} --verify-only --bundle "$t"/{name} >/dev/null; '
            f"if [ -e {base}/{name} ]; then rm -rf {base}/.{name}.old; "
            f"mv {base}/{name} {base}/.{name}.old; fi; "
            f'mv "$t"/{name} {base}/{name}; rm -rf {base}/.{name}.old; '
            f"cd {base}/{name} && pwd"
        )

    def run(self, where: str, args: Sequence[str]) -> Dict[str, Any]:
        q = shlex.quote
        argv = " ".join(q(a) for a in args)
        script = (
            f"cd {q(where)} && {q(self.python)} {ENTRY} {argv} --out {RESULTS} >&2 && cat {RESULTS}"
        )
        out = self._ssh(script)
        try:
            return jsonsafe.loads(out)
        except ValueError:
            raise RobustEdgeError(f"{self.dest} returned no results JSON") from None

    def python_probe(self, source: str) -> Optional[str]:
        py = shlex.quote(self.python)
        script = f"command -v {py} >/dev/null 2>&1 || {{ echo {NO_PYTHON}; exit 0; }}; {py} -"
        out = self._ssh(script, source.encode()).decode()
        return None if out.strip() == NO_PYTHON else out


def parse_ssh_url(url: str) -> SplitResult:
    """``ssh://user@host[:port][/path]`` split; RobustEdgeError when it is not one, or when its
    user or host could pass for an ssh option."""
    u = urlsplit(url)
    if u.scheme != "ssh" or not u.hostname:
        raise RobustEdgeError(f"bad ssh target '{url}' (want ssh://user@host[:port][/path])")
    for part in (u.hostname, u.username or "x"):  # '-o...' would be an ssh option
        if part.startswith("-") or not re.fullmatch(r"[\w.\[\]:%-]+", part):
            raise RobustEdgeError(f"bad ssh target '{url}': unsafe user or host '{part}'")
    return u


class VMTarget(SSHTarget):
    """The full-system VM from ``robustedge device setup-vm --arch ARCH``: booted on first use
    (or found running), then an SSH board like any other (user ``board``, ``~/robustedge``)."""

    emulated = True
    ssh_settings = False
    arch: ClassVar[str] = ""  # set by the registered subclasses

    @classmethod
    def from_spec(cls, spec: str, **kw: Any) -> Target:
        return cls(cls.arch, kw.get("qemu_root"), python=kw.get("python") or "python3")

    @classmethod
    def check_spec(cls, spec: str) -> None:
        pass

    def __init__(
        self,
        arch: str,
        root: Optional[Path] = None,
        state_dir: Optional[Path] = None,
        python: str = "python3",
        path: str = "~/robustedge",
        user: str = vm.USER,
    ) -> None:
        self.arch, self.name = arch, f"vm-{arch}"  # type: ignore[misc]
        self.vm = vm.VM(arch, root, state_dir)
        self._python, self._path, self._user = python, path, user
        self.state: Optional[vm.VMState] = None

    def ensure_running(self) -> vm.VMState:
        """Boot (or reuse) the VM; afterwards this is an SSHTarget pointing at it."""
        if self.state is None:
            st = self.vm.start()
            url = self.vm.ssh_url(st, self._user, self._path)
            SSHTarget.__init__(self, url, self.vm.ssh_options(st), python=self._python)
            self.name, self.state = f"vm-{self.arch}", st
        return self.state

    def deploy(self, bundle: Path) -> str:
        self.ensure_running()
        return super().deploy(bundle)

    def run(self, where: str, args: Sequence[str]) -> Dict[str, Any]:
        self.ensure_running()
        return super().run(where, args)

    def python_probe(self, source: str) -> Optional[str]:
        self.ensure_running()
        return super().python_probe(source)

    def bench(self, bundle: Path, cfg: BenchSettings = None) -> Dict[str, Any]:
        st = self.ensure_running()
        results = super().bench(bundle, cfg)
        results["emulation"] = {"model": self.vm.spec.model, "boot_s": st.boot_s}
        return results


# The emulated boards: what each runs follows its userland's interpreters (qemu.ARCHES; the
# VM images carry the same wheels): armv7 has tflite-runtime only (no onnxruntime wheel).
@TARGETS.register("qemu-aarch64")
class QemuAarch64(QemuTarget):
    arch = "aarch64"


@TARGETS.register("qemu-armv7")
class QemuArmv7(QemuTarget):
    arch = "armv7"
    families = (Family.TFLITE.value,)


@TARGETS.register("vm-aarch64")
class VMAarch64(VMTarget):
    arch = "aarch64"
    usage = "vm-aarch64 (full-system VM over SSH)"


@TARGETS.register("vm-armv7")
class VMArmv7(VMTarget):
    arch = "armv7"
    families = (Family.TFLITE.value,)
    usage = "vm-armv7 (full-system VM over SSH)"


def target_class(spec: str) -> Type[Target]:
    """The registered class of target string ``spec`` (a name, or a string one class takes by
    prefix: ``ssh://...``, a local path), checked (:meth:`Target.check_spec`) but not built;
    an unknown target raises, listing the known ones."""
    cls = TARGETS[spec] if spec in TARGETS else None
    if cls is None:  # a string some class takes by prefix (ssh://..., a local path)
        cls = next((c for c in TARGETS.values() if _takes(c, spec)), None)
    if cls is None:
        raise UnknownNameError(f"unknown target '{spec}' (known: {target_help()})")
    cls.check_spec(spec)
    return cls


def _takes(cls: Type[Target], spec: str) -> bool:
    prefixes = _own(cls, "prefixes", ())
    return bool(prefixes) and spec.startswith(prefixes)


def _own(cls: type, attr: str, default: Any) -> Any:
    """``cls.attr`` when ``cls`` itself declares it, else ``default`` (not inherited)."""
    return vars(cls).get(attr, default)


def make_target(spec: str, **kw: Any) -> Target:
    """The target of ``spec`` (see :func:`target_class`), built with ``kw`` (python,
    ssh_options, qemu_root; each target takes what applies to it)."""
    return target_class(spec).from_spec(spec, **kw)


def is_emulated(spec: str) -> bool:
    """Whether target string ``spec`` names an emulated board (its latency is no board's)."""
    return target_class(spec).emulated


def target_help() -> str:
    """How targets are written, one entry per registered target (for help texts)."""
    return " | ".join(_own(cls, "usage", "") or name for name, cls in TARGETS.items())
