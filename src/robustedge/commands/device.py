"""`robustedge bundle | deploy | bench | device setup-qemu`: put a model on a board, measure it."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from robustedge.commands.options import config_from_options, config_options, lazy_option
from robustedge.device.board.config import CLI_DEFAULTS, BenchConfig, parse_square_n
from robustedge.device.host.bundle import NO_CODEC, BundleConfig, codec_names
from robustedge.device.host.qemu import ARCHES
from robustedge.device.host.vm_image import VM_ARCHES


def target_help() -> str:
    """``--target``'s help: every registered target (robustedge.device.host.targets.TARGETS)."""
    from robustedge.device.host.targets import target_help as known

    return known()


def _ssh_options(ssh_config: Optional[str], ssh_option: Tuple[str, ...]) -> List[str]:
    opts = ["-F", ssh_config] if ssh_config else []
    for o in ssh_option:
        opts += ["-o", o]
    return opts


SSH_CONFIG = click.option(
    "--ssh-config",
    default=None,
    type=click.Path(dir_okay=False),
    help="ssh -F FILE (default: ~/.ssh/config).",
)
SSH_OPTION = click.option(
    "--ssh-option",
    multiple=True,
    help="Extra ssh -o option, repeatable (e.g. UserKnownHostsFile=...).",
)
PYTHON = click.option(
    "--python", default=None, help="Python on the target (default: python3; local: this one)."
)


def _split_commas(_ctx: Any, _param: Any, value: Tuple[str, ...]) -> Tuple[str, ...]:
    """``--formats a,b --formats c`` -> ``(a, b, c)``."""
    return tuple(f.strip() for v in value or () for f in v.split(",") if f.strip())


class SquareN(click.ParamType):
    """``--square-n``: a number of images, or ``all`` (BenchConfig checks the range)."""

    name = "N|all"

    def convert(self, value: Any, param: Any, ctx: Any) -> Optional[int]:
        if value is None or isinstance(value, int):
            return value
        try:
            return parse_square_n(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@click.command("bundle")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Bundle folder, or FILE.tar."
)
@config_options(
    BundleConfig,
    overrides={
        "formats": {"callback": _split_commas},
        "codec": {"type": click.Choice(codec_names())},
    },
)
@click.option(
    "--no-compress", is_flag=True, help=f"Store model files as exported (--codec {NO_CODEC})."
)
def bundle_cmd(run: Path, out: Path, no_compress: bool, **opts: Any) -> None:
    """Pack RUN's export (models, eval sets, runner, manifest) into a self-contained bundle."""
    from robustedge.device.board.bundle_format import read_manifest
    from robustedge.device.host.bundle import build_bundle

    fixed = {"codec": NO_CODEC} if no_compress else {}
    path = build_bundle(run, out, config_from_options(BundleConfig, opts, **fixed))
    if path.is_dir():
        m = read_manifest(path)
        click.echo(f"bundle: {path} ({len(m['files'])} files, formats: {', '.join(m['formats'])})")
        for fmt, art in m["formats"].items():
            if art.get("codec"):
                click.echo(
                    f"  {fmt}: {art['flash_bytes']:,} flash bytes ({art['codec']}), "
                    f"{art['model_bytes']:,} model bytes"
                )
    else:
        click.echo(f"bundle: {path} ({path.stat().st_size} bytes)")


def _open_bundle(bundle: Path, tmp: str) -> Path:
    from robustedge.device.board.bundle_format import verify_bundle
    from robustedge.device.host.bundle import unpack

    if bundle.is_file() and bundle.suffix == ".tar":
        bundle = unpack(bundle, tmp)
    verify_bundle(bundle)
    return bundle


def _target(target: str, ssh_config, ssh_option, python) -> Any:
    from robustedge.device.host.targets import make_target

    return make_target(target, ssh_options=_ssh_options(ssh_config, ssh_option), python=python)


@click.command("deploy")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@lazy_option("--target", required=True, help_fn=target_help)
@SSH_CONFIG
@SSH_OPTION
@PYTHON
def deploy_cmd(bundle: Path, target: str, ssh_config, ssh_option, python) -> None:
    """Copy BUNDLE to a target atomically (verified there before it goes live); run nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        b = _open_bundle(bundle, tmp)
        where = _target(target, ssh_config, ssh_option, python).deploy(b)
    click.echo(f"deployed to {target}: {where}")


@click.command("bench")
@click.option("--bundle", "bundle", required=True, type=click.Path(exists=True, path_type=Path))
@lazy_option("--target", default="local", show_default=True, help_fn=target_help)
@click.option(
    "--out",
    default=None,
    type=click.Path(path_type=Path),
    help="Results JSON (default: results-<target>.json).",
)
@config_options(
    BenchConfig,
    exclude=("emulated",),  # the target says whether it emulates
    overrides={
        "square_n": {"type": SquareN(), "default": CLI_DEFAULTS["square_n"], "show_default": True}
    },
)
@SSH_CONFIG
@SSH_OPTION
@PYTHON
def bench_cmd(bundle, target, out, ssh_config, ssh_option, python, **opts: Any) -> None:
    """Copy BUNDLE to TARGET, run it there, fetch the measurements JSON."""
    from robustedge.errors import RobustEdgeError
    from robustedge.io import write_json

    cfg = config_from_options(BenchConfig, opts)
    with tempfile.TemporaryDirectory() as tmp:
        b = _open_bundle(bundle, tmp)
        results = _target(target, ssh_config, ssh_option, python).bench(b, cfg)
    out = out or Path(f"results-{_slug(target)}.json")
    write_json(out, results)
    try:
        print_results(results)
    except (KeyError, TypeError, AttributeError, ValueError) as e:  # a hostile/broken board
        raise RobustEdgeError(
            f"{target} returned malformed results ({type(e).__name__}: {e}); raw JSON in {out}"
        ) from None
    click.echo(f"results: {out}")


def _slug(target: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in target).strip("_")


def print_results(r: Dict[str, Any]) -> None:
    """One block per run: accuracy, robust accuracy, latency (labelled when emulated)."""
    b = r["board"]
    click.echo(
        f"target {r.get('target')}: {b['machine']} / {b['cpu_model']} / Python "
        f"{b['python']} / {r['backend']} {r['backend_version']} ({r['kernels']})"
    )
    wc = r.get("worst_case")
    for name, acc in r["accuracy"].items():
        label = name
        if name == "transfer":  # name the attack that crafted the transfer set
            label = (wc or {}).get("transfer_name") or "PGD transfer"
        click.echo(f"  {label:<26} {100 * acc:7.2f}%  (n={r['n_eval'][name]})")
    for a in r["robust"]:
        label = f"{a.get('name') or 'Square-' + str(a['n_queries'])} eps={a['eps']:g}"
        click.echo(f"  {label:<26} {100 * a['acc']:7.2f}%  (n={a['n']})")
    if wc:
        click.echo(f"  {'robust (worst case)':<26} {100 * wc['acc']:7.2f}%  ({wc['label']})")
        if wc.get("weaker"):
            click.echo(f"  NOTE {wc['weaker']}")
    lat = r.get("latency")
    if lat:
        tag = "  EMULATED, not a board latency" if r.get("emulated") else ""
        click.echo(
            f"  latency p50 {lat['p50_ms']:.4f} ms  p99 {lat['p99_ms']:.4f} ms  "
            f"({lat['runs']} runs, {lat['threads']} thread(s)){tag}"
        )
        for problem in lat.get("problems") or []:
            click.echo(f"  WARNING latency suspect: {problem}")
    flash = r.get("flash_bytes")
    inflate = f", inflated in {r['decompress_ms']} ms" if r.get("decompress_ms") is not None else ""
    click.echo(
        (f"  flash {flash} bytes, " if flash is not None else "  ")
        + f"model {r['model_bytes']} bytes, peak RSS {r['peak_rss_mb']} MiB{inflate}"
    )
    from robustedge.device.host.mcu import summary_lines  # the tflm target's MCU section

    for line in summary_lines(r.get("mcu")):
        click.echo(f"  {line}")


@click.group("device")
def device_group() -> None:
    """Device harness helpers (emulated ARM userlands and VMs, board checks)."""


@device_group.command("setup-qemu")
@click.option("--arch", type=click.Choice(sorted(ARCHES)), default="aarch64", show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if a ready userland is cached.")
def setup_qemu_cmd(arch: str, force: bool) -> None:
    """Build (once) a Python 3.11 ARM userland for the qemu targets (needs root)."""
    from robustedge.device.host.qemu import setup_qemu

    click.echo(f"qemu {arch} userland: {setup_qemu(arch, force=force)}")


@device_group.command("cache-key")
@click.option("--arch", type=click.Choice(sorted(ARCHES)), default="aarch64", show_default=True)
@click.option("--path", "show_path", is_flag=True, help="Print the folder to cache instead.")
def cache_key_cmd(arch: str, show_path: bool) -> None:
    """Print the CI cache key of the ARCH userland (changes when its contents would), or with
    --path the folder to cache ($ROBUSTEDGE_CACHE/qemu/ARCH when set)."""
    from robustedge.device.host.qemu import cache_key, cache_root

    click.echo(str(cache_root() / arch) if show_path else cache_key(arch))


@device_group.command("setup-vm")
@click.option("--arch", type=click.Choice(sorted(VM_ARCHES)), default="aarch64", show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if a ready image is cached.")
def setup_vm_cmd(arch: str, force: bool) -> None:
    """Build (once) a Debian VM image that boots as an SSH board (needs root)."""
    from robustedge.device.host.vm import ready_info, setup_vm

    path = setup_vm(arch, force=force)
    info = ready_info(arch)
    click.echo(
        f"{arch} VM image: {path} (disk {info['disk_used_mb']} MiB used, "
        f"built in {info['build_s']} s, SSH after {info['boot_s']} s)"
    )


@device_group.command("vm")
@click.argument("action", type=click.Choice(["start", "stop", "status"]))
@click.option("--arch", type=click.Choice(sorted(VM_ARCHES)), default="aarch64", show_default=True)
def vm_cmd(action: str, arch: str) -> None:
    """Start, stop or show the VM board (the vm-ARCH target starts it by itself too)."""
    from robustedge.device.host.vm import VM

    machine = VM(arch)
    if action == "start":
        st = machine.start()
        click.echo(f"vm-{arch}: running, ssh on 127.0.0.1:{st.port} (booted in {st.boot_s} s)")
    elif action == "stop":
        click.echo(f"vm-{arch}: {'stopped' if machine.stop() else 'was not running'}")
    else:
        st = machine.state()
        click.echo(f"vm-{arch}: " + (f"running, ssh on 127.0.0.1:{st.port}" if st else "stopped"))


@device_group.command("doctor")
@click.argument("target")
@SSH_CONFIG
@SSH_OPTION
@PYTHON
def doctor_cmd(target: str, ssh_config, ssh_option, python) -> None:
    """Check that TARGET can run bundles (python, numpy, interpreter, disk, governor,
    throttling); print the fix for each failure and exit 1 if any check fails."""
    from robustedge.device.host.doctor import FAIL, board_facts, diagnose

    t = _target(target, ssh_config, ssh_option, python)
    checks = diagnose(board_facts(t), getattr(t, "python", None) or python or "python3")
    for c in checks:
        click.echo(f"  [{c.status:<4}] {c.name:<12} {c.detail}")
        if c.fix:
            click.echo(f"         fix: {c.fix}")
    failed = [c.name for c in checks if c.status == FAIL]
    if failed:
        click.echo(f"{target}: {len(failed)} check(s) failed ({', '.join(failed)})")
        sys.exit(1)  # (click's Exit is swallowed by main()'s standalone_mode=False)
    click.echo(f"{target}: ready")


COMMANDS = [bundle_cmd, deploy_cmd, bench_cmd, device_group]
