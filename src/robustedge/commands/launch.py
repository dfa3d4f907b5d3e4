"""``--nproc N``: run a training command data-parallel under torchrun.

``robustedge train --nproc 2 ...`` re-runs itself as ``torchrun --standalone --nproc-per-node 2
-m robustedge.cli train ...`` (the same options, written out from the parsed values). Only
rank 0 prints and writes. When a rank fails the job ends (torchrun stops the others; the
process group's timeout ends a rank stuck in a collective) and the launcher prints one line:
the failing rank and its error. ``-v`` passes torchrun's own log through.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from typing import Any, Callable, List, Optional

import click

from robustedge.errors import RobustEdgeError

RANK_LINE = re.compile(r"^\[default(\d+)\]:(.*)$")
ERROR_LINE = re.compile(r"^(error: .*|[A-Za-z_.]*(Error|Exception|Interrupt)\b.*)$")


def nproc_option(f: Callable) -> Callable:
    """Add ``--nproc N`` to a command: with N > 1 (and not already under torchrun) the
    command is relaunched under torchrun with N processes instead of running here."""

    @click.option(
        "--nproc",
        default=1,
        show_default=True,
        type=click.IntRange(min=1),
        help="Data-parallel processes (launches torchrun; gloo on CPU, NCCL on CUDA).",
    )
    @functools.wraps(f)
    def wrapper(*args: Any, nproc: int = 1, **kwargs: Any) -> Any:
        if nproc > 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
            launch(nproc, command_argv(click.get_current_context()))
            return None
        return f(*args, **kwargs)

    return wrapper


def is_main_rank() -> bool:
    """False on the ranks of a torchrun job other than 0 (they print nothing)."""
    return os.environ.get("RANK", "0") == "0"


def command_argv(ctx: click.Context) -> List[str]:
    """The command line of ``ctx`` (group names, then every option from its parsed value),
    without ``--nproc``; the root group's ``-v`` is kept."""
    chain, c = [], ctx
    while c.parent is not None:
        chain.append(c)
        c = c.parent
    argv: List[str] = ["-v"] if c.params.get("verbose") else []
    for sub in reversed(chain):
        argv.append(sub.info_name or "")
        argv += _params_argv(sub)
    return argv


def _params_argv(ctx: click.Context) -> List[str]:
    out: List[str] = []
    positional: List[str] = []
    for p in ctx.command.params:
        if p.name == "nproc" or p.name not in ctx.params:
            continue
        value = ctx.params[p.name]
        if isinstance(p, click.Argument):
            vals = value if isinstance(value, (list, tuple)) else [value]
            positional += [str(v) for v in vals if v is not None]
            continue
        if value is None or not isinstance(p, click.Option):
            continue
        flag = p.opts[-1] if p.opts[-1].startswith("--") else p.opts[0]
        if p.is_flag and not p.multiple:
            if value:
                out.append(flag)
            elif p.secondary_opts:
                out.append(p.secondary_opts[0])
            continue
        for v in value if p.multiple else [value]:
            out += [flag, str(v)]
    return out + (["--", *positional] if positional else [])


def launch(nproc: int, argv: List[str], verbose: Optional[bool] = None) -> None:
    """Run ``robustedge ARGV`` under torchrun with ``nproc`` local processes. Rank 0's output
    passes through; on failure raise one :class:`RobustEdgeError` line naming the rank."""
    verbose = "-v" in argv if verbose is None else verbose
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--tee=2",
        "-m",
        "robustedge.cli",
        *argv,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("LOGLEVEL", "INFO" if verbose else "ERROR")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    errors: List[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            found = RANK_LINE.match(line.rstrip("\n"))
            if found:
                rank, text = int(found.group(1)), found.group(2).strip()
                if ERROR_LINE.match(text):
                    errors.append(f"rank {rank}: {text.removeprefix('error: ')}")
                if verbose:
                    sys.stderr.write(line)
            elif verbose:
                sys.stderr.write(line)
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    if rc != 0:
        first = _first_cause(errors)
        raise RobustEdgeError(
            f"{nproc}-process job failed: {first}"
            if first
            else f"{nproc}-process job failed (torchrun exit code {rc}; rerun with -v for its log)"
        )


def _first_cause(errors: List[str]) -> Optional[str]:
    """The first rank's own error, rather than a peer's 'connection closed' that follows it."""
    secondary = ("Connection closed", "Connection reset", "ProcessGroup", "SIGTERM", "Signal")
    for e in errors:
        if not any(s in e for s in secondary):
            return e
    return errors[0] if errors else None
