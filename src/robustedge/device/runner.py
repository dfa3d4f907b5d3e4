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
from typing import TYPE_CHECKING, List, Optional

from robustedge.device.bundle_format import (
    BENCH_RUNS,
    BENCH_SQUARE_N,
    BENCH_SQUARE_QUERIES,
    BENCH_SQUARE_RESTARTS,
    BundleError,
    model_name,
    verify_bundle,
)
from robustedge.device.probe import ThrottledRun
from robustedge.errors import RobustEdgeError

if TYPE_CHECKING:
    from robustedge.device.onboard import RunOptions

logger = logging.getLogger(__name__)

EXIT_OTHER, EXIT_BUNDLE, EXIT_DEPS, EXIT_WRITE, EXIT_THROTTLED = 2, 3, 4, 5, 6
MIN_RUNS = 200


class MissingDependency(RobustEdgeError):
    """numpy or an interpreter for the bundle's format is not installed on the board."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_bundle.py", description="Measure a robustedge bundle.")
    p.add_argument("--bundle", default=None, help="Bundle folder (default: this script's).")
    p.add_argument(
        "--format",
        dest="fmt",
        default=None,
        help="Model format to run (default: the bundle's default_format in manifest.json).",
    )
    p.add_argument(
        "--backend",
        default=None,
        help="litert | tflite-runtime | onnxruntime (default: the first installed one that reads "
        "the format, in that order).",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="Interpreter threads (default: %(default)s)."
    )
    p.add_argument(
        "--runs",
        type=_runs,
        default=BENCH_RUNS,
        help="Timed invokes: >= 200, or 0 to skip (default: %(default)s).",
    )
    p.add_argument(
        "--warmup", type=int, default=20, help="Untimed invokes first (default: %(default)s)."
    )
    p.add_argument(
        "--square-queries",
        type=int,
        default=BENCH_SQUARE_QUERIES,
        help="Square queries per image and restart; 0 skips the attack (default: %(default)s; "
        "fewer are labelled 'weaker than default' in the results).",
    )
    p.add_argument(
        "--square-restarts",
        type=int,
        default=BENCH_SQUARE_RESTARTS,
        help="Square restarts on the images not yet broken (default: %(default)s).",
    )
    p.add_argument(
        "--square-n",
        type=square_n,
        default=BENCH_SQUARE_N,
        help="Images attacked: a number, or 'all' (default: the whole evaluation set).",
    )
    p.add_argument(
        "--square-eps",
        type=float,
        default=None,
        help="Square's Linf budget (default: the manifest's).",
    )
    p.add_argument(
        "--reference-kernels",
        action="store_true",
        help="TFLite BUILTIN_REF kernels: int8 outputs bit-identical across CPUs.",
    )
    p.add_argument(
        "--refuse-throttled",
        action="store_true",
        help="Fail (exit 6) instead of flagging a run during which the board throttled or "
        "changed CPU frequency.",
    )
    p.add_argument("--emulated", action="store_true", help="Set by emulating targets.")
    p.add_argument(
        "--seed", type=int, default=0, help="Square's random seed (default: %(default)s)."
    )
    p.add_argument("--verify-only", action="store_true", help="Check sha256s and exit.")
    p.add_argument("--out", default="results.json", help="Results JSON (default: %(default)s).")
    return p


def square_n(text: str) -> Optional[int]:
    """``--square-n``: ``all`` (None) or a number of images >= 1."""
    if text.strip().lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"need a number of images >= 1 or 'all', got {text!r}")
    return n


def _runs(text: str) -> int:
    """``--runs``: 0 (no timing) or at least MIN_RUNS timed invokes."""
    need = f"need >= {MIN_RUNS} timed runs (or 0 to skip), got"
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{need} {text!r}") from None
    if n != 0 and n < MIN_RUNS:
        raise argparse.ArgumentTypeError(f"{need} {n}")
    return n


def check_dependencies(manifest: dict, fmt: Optional[str], backend: Optional[str]) -> None:
    """Raise MissingDependency naming the pip package(s) to install."""
    try:
        has_numpy = importlib.util.find_spec("numpy") is not None
    except (ImportError, ValueError):
        has_numpy = False
    if not has_numpy:
        raise MissingDependency("this board has no numpy: pip install numpy")
    from robustedge.device.backends import pick_backend

    formats = manifest.get("formats", {})
    fmt = fmt or manifest.get("default_format") or (sorted(formats)[0] if formats else None)
    if fmt in formats:
        try:
            pick_backend(model_name(formats[fmt]), backend)
        except RobustEdgeError as e:
            if "pip install" in str(e):
                raise MissingDependency(str(e)) from None
            raise


def run_options(args: argparse.Namespace, emulated: bool) -> RunOptions:
    """The parsed command line as the measurement's options."""
    from robustedge.device.onboard import RunOptions

    return RunOptions(
        fmt=args.fmt,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        square_queries=args.square_queries,
        square_n=args.square_n,
        square_restarts=args.square_restarts,
        square_eps=args.square_eps,
        reference_kernels=args.reference_kernels,
        backend=args.backend,
        emulated=emulated,
        seed=args.seed,
        refuse_throttled=args.refuse_throttled,
    )


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
        manifest = verify_bundle(bundle)
        if args.verify_only:
            packed = sum(a.get("codec") is not None for a in manifest["formats"].values())
            print(
                f"bundle ok: {len(manifest['files'])} files verified"
                + (f", {packed} compressed model(s) inflated and verified" if packed else "")
            )
            return 0
        check_dependencies(manifest, args.fmt, args.backend)
        from robustedge.device import measure
        from robustedge.device.onboard import run_bundle
        from robustedge.device.probe import device_model

        machine, cpu = platform.machine(), measure.cpu_model()
        emulated = args.emulated or measure.looks_emulated(machine, cpu, device_model())

        results = run_bundle(bundle, manifest, run_options(args, emulated)).to_dict()
    except BundleError as e:
        return _fail(f"refusing bundle: {e}", EXIT_BUNDLE)
    except MissingDependency as e:
        return _fail(str(e), EXIT_DEPS)
    except RobustEdgeError as e:
        return _fail(str(e), EXIT_OTHER)
    except ThrottledRun as e:
        return _fail(str(e), EXIT_THROTTLED)
    except ValueError as e:  # RunOptions' checks
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
