"""The board-side entry point: ``python3 run_bundle.py [options] --out results.json``.

Order matters: verify every sha256 (stdlib only), then check that numpy and an interpreter are
installed (saying exactly what to ``pip install``), then measure and write the results JSON
atomically. Problems are one line on stderr and a non-zero exit code:
2 usage or other, 3 tampered/incomplete/mismatched bundle, 4 missing package, 5 write failure,
6 the board throttled during the timed run and ``--refuse-throttled`` was given.
Module top level imports the stdlib only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from robustedge.device.board.bundle_format import BundleError, model_name, verify_bundle
from robustedge.device.board.config import MIN_RUNS, BenchConfig
from robustedge.device.board.probe import ThrottledRun
from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

EXIT_OTHER, EXIT_BUNDLE, EXIT_DEPS, EXIT_WRITE, EXIT_THROTTLED = 2, 3, 4, 5, 6
__all__ = ["MIN_RUNS", "main", "parser"]


class MissingDependency(RobustEdgeError):
    """numpy or an interpreter for the bundle's format is not installed on the board."""


def parser() -> argparse.ArgumentParser:
    """The runner's command line: every :class:`BenchConfig` field, plus where the bundle is,
    ``--verify-only`` and where the results go."""
    p = argparse.ArgumentParser(prog="run_bundle.py", description="Measure a robustedge bundle.")
    p.add_argument("--bundle", default=None, help="Bundle folder (default: this script's).")
    BenchConfig.add_arguments(p)
    p.add_argument("--verify-only", action="store_true", help="Check sha256s and exit.")
    p.add_argument("--out", default="results.json", help="Results JSON (default: %(default)s).")
    return p


def check_dependencies(manifest: dict, fmt: Optional[str], backend: Optional[str]) -> None:
    """Raise MissingDependency naming the pip package(s) to install."""
    try:
        has_numpy = importlib.util.find_spec("numpy") is not None
    except (ImportError, ValueError):
        has_numpy = False
    if not has_numpy:
        raise MissingDependency("this board has no numpy: pip install numpy")
    from robustedge.device.board.backends import pick_backend

    formats = manifest.get("formats", {})
    fmt = fmt or manifest.get("default_format") or (sorted(formats)[0] if formats else None)
    if fmt in formats:
        try:
            pick_backend(model_name(formats[fmt]), backend)
        except RobustEdgeError as e:
            if "pip install" in str(e):
                raise MissingDependency(str(e)) from None
            raise


def write_results(path: Path, obj: dict) -> None:
    """Atomic JSON write (a full disk leaves the old file, never half a new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: Optional[List[str]] = None, default_bundle: Optional[str] = None) -> int:
    """Verify, check dependencies, measure, write JSON. Returns the exit code."""
    args = parser().parse_args(argv)
    bundle = Path(args.bundle or default_bundle or ".").resolve()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = BenchConfig.from_namespace(args)
    except ValueError as e:  # BenchConfig's checks: a usage error, before anything is read
        return _fail(str(e), EXIT_OTHER)
    try:
        manifest = verify_bundle(bundle)
        if args.verify_only:
            packed = sum(a.get("codec") is not None for a in manifest["formats"].values())
            print(
                f"bundle ok: {len(manifest['files'])} files verified"
                + (f", {packed} compressed model(s) inflated and verified" if packed else "")
            )
            return 0
        check_dependencies(manifest, cfg.format, cfg.backend)
        from robustedge.device.board import measure
        from robustedge.device.board.onboard import run_bundle
        from robustedge.device.board.probe import device_model

        machine, cpu = platform.machine(), measure.cpu_model()
        if not cfg.emulated and measure.looks_emulated(machine, cpu, device_model()):
            cfg = cfg.replace(emulated=True)
        results = run_bundle(bundle, manifest, cfg).to_dict()
    except BundleError as e:
        return _fail(f"refusing bundle: {e}", EXIT_BUNDLE)
    except MissingDependency as e:
        return _fail(str(e), EXIT_DEPS)
    except RobustEdgeError as e:
        return _fail(str(e), EXIT_OTHER)
    except ThrottledRun as e:
        return _fail(str(e), EXIT_THROTTLED)
    except ValueError as e:
        return _fail(str(e), EXIT_OTHER)
    try:
        write_results(Path(args.out), results)
    except OSError as e:
        return _fail(f"cannot write {args.out}: {e.strerror or e}", EXIT_WRITE)
    print(f"wrote {args.out}")
    return 0


def _fail(msg: str, code: int) -> int:
    sys.stderr.write(f"error: {msg}\n")
    return code
