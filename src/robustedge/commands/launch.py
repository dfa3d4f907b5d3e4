"""``--nproc N`` and ``--nnodes M``: run a training command data-parallel under torchrun.

``robustedge train --nproc 2 ...`` re-runs itself as ``torchrun --standalone --nproc-per-node 2
-m robustedge.cli train ...`` (the same options, written out from the parsed values). Over
several machines every node runs the same command with ``--nnodes M --rdzv-endpoint HOST:PORT``:
the nodes meet at torchrun's c10d rendezvous (hosted by the node whose address is HOST; the
first to arrive becomes node 0) under one ``--rdzv-id``, or, with ``--node-rank R`` on each
node, at node 0's address (torchrun's static rendezvous). Only global rank 0 prints and
writes. When a rank, or a whole node, fails, the job ends (torchrun stops the local ranks; the
process group's timeout ends a rank stuck in a collective) and the launcher of every surviving
node prints one line: the first failing rank's error, or what its node lost. ``-v`` passes
torchrun's own log through.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, List, NoReturn, Optional

import click

from robustedge.commands.forked import fork_ranks_in_this_agent, fresh_streams, run_as_main
from robustedge.errors import RobustEdgeError

RANK_LINE = re.compile(r"^\[default(\d+)\]:(.*)$")
ERROR_LINE = re.compile(r"^(error: .*|[A-Za-z_.]*(Error|Exception|Interrupt)\b.*)$")
# torchrun's prefix of a worker's output: its global rank (the default is the local one)
PREFIX_TEMPLATE = "[${role_name}${rank}]:"
LAUNCH_PARAMS = ("nproc", "nnodes", "node_rank", "rdzv_endpoint", "rdzv_id")
SECONDARY = ("Connection closed", "Connection reset", "ProcessGroup", "SIGTERM", "Signal")
TORCH_RANK = re.compile(r"^\[rank\d+\]:")  # torch's own prefix of a rank's traceback
AGENT_ERROR = re.compile(r"(\w*(?:Error|Exception)): (.*)$")
CXX_PREFIX = re.compile(r"^(\w*(?:Error|Exception): )?\[[^\]]+\.(?:cc|cpp|h|hpp):\d+\] ")


@dataclass(frozen=True)
class Nodes:
    """Where a job's processes run: ``nproc`` per node on ``nnodes`` machines that meet at
    ``endpoint`` (HOST:PORT): torchrun's c10d rendezvous named ``rdzv_id``, or, with
    ``node_rank``, its static one (node 0 listens at ``endpoint``)."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: Optional[int] = None
    endpoint: Optional[str] = None
    rdzv_id: Optional[str] = None

    def __post_init__(self) -> None:
        if self.nproc < 1 or self.nnodes < 1:
            raise ValueError(f"--nproc and --nnodes must be >= 1, got {self.nproc}, {self.nnodes}")
        if self.nnodes == 1:
            given = [o for o, v in self._node_options() if v is not None]
            if given:
                raise ValueError(f"{given[0]} is for a job over several nodes (--nnodes > 1)")
            return
        if self.endpoint is None:
            raise ValueError(
                f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT, the same on every node"
            )
        split_endpoint(self.endpoint)
        if self.node_rank is not None and not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"--node-rank must be in 0..{self.nnodes - 1}, got {self.node_rank}")
        if self.node_rank is not None and self.rdzv_id is not None:
            raise ValueError("--rdzv-id names a c10d rendezvous; with --node-rank leave it out")

    def _node_options(self):
        return [
            ("--node-rank", self.node_rank),
            ("--rdzv-endpoint", self.endpoint),
            ("--rdzv-id", self.rdzv_id),
        ]

    @property
    def launches(self) -> bool:
        """True when the command must run under torchrun."""
        return self.nproc > 1 or self.nnodes > 1

    def describe(self) -> str:
        if self.nnodes == 1:
            return f"{self.nproc}-process"
        return f"{self.nnodes}-node x {self.nproc}-process"

    def torchrun_args(self, argv: List[str]) -> List[str]:
        """torchrun's options for this layout (``argv``: the command, for a default id)."""
        per_node = f"--nproc-per-node={self.nproc}"
        if self.nnodes == 1:
            return ["--standalone", per_node]
        assert self.endpoint is not None  # checked in __post_init__
        args = [f"--nnodes={self.nnodes}", per_node, "--max-restarts=0"]
        if self.node_rank is not None:
            host, port = split_endpoint(self.endpoint)
            return args + [
                "--rdzv-backend=static",
                f"--node-rank={self.node_rank}",
                f"--master-addr={host}",
                f"--master-port={port}",
            ]
        run_id = self.rdzv_id or default_rdzv_id(argv)
        return args + [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={self.endpoint}",
            f"--rdzv-id={run_id}",
        ]


def split_endpoint(endpoint: str) -> tuple:
    """``HOST:PORT`` -> (host, port); a ValueError naming the option otherwise."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--rdzv-endpoint must be HOST:PORT (port 1-65535), got {endpoint!r}")
    return host.strip("[]"), int(port)


def default_rdzv_id(argv: List[str]) -> str:
    """The same on every node that runs the same command line: a hash of it."""
    return "robustedge-" + hashlib.sha256("\0".join(argv).encode()).hexdigest()[:12]


def nproc_option(f: Callable) -> Callable:
    """Add ``--nproc N`` and the multi-node options to a command: when the job needs more
    than this process (and it is not already under torchrun) the command is relaunched under
    torchrun instead of running here."""

    @click.option(
        "--nproc",
        default=1,
        show_default=True,
        type=click.IntRange(min=1),
        help="Data-parallel processes on this node (launches torchrun; gloo on CPU, NCCL on CUDA).",
    )
    @click.option(
        "--nnodes",
        default=1,
        show_default=True,
        type=click.IntRange(min=1),
        help="Machines in the job; run the same command on each (with --rdzv-endpoint).",
    )
    @click.option(
        "--node-rank",
        default=None,
        type=click.IntRange(min=0),
        help="This machine's rank (static rendezvous at node 0's --rdzv-endpoint) "
        "[default: the c10d rendezvous assigns it].",
    )
    @click.option(
        "--rdzv-endpoint",
        default=None,
        metavar="HOST:PORT",
        help="Where the nodes meet: the c10d rendezvous host (or node 0 with --node-rank).",
    )
    @click.option(
        "--rdzv-id",
        default=None,
        help="The c10d rendezvous's job id, the same on every node [default: a hash of the "
        "command line].",
    )
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        launch_opts = {k: kwargs.pop(k, None) for k in LAUNCH_PARAMS}
        try:
            nodes = Nodes(
                launch_opts["nproc"] or 1,
                launch_opts["nnodes"] or 1,
                launch_opts["node_rank"],
                launch_opts["rdzv_endpoint"],
                launch_opts["rdzv_id"],
            )
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        if nodes.launches and "TORCHELASTIC_RUN_ID" not in os.environ:
            launch(nodes, command_argv(click.get_current_context()))
            return None
        return f(*args, **kwargs)

    return wrapper


def is_main_rank() -> bool:
    """False on the ranks of a torchrun job other than 0 (they print nothing)."""
    return os.environ.get("RANK", "0") == "0"


def command_argv(ctx: click.Context) -> List[str]:
    """The command line of ``ctx`` (group names, then every option from its parsed value),
    without the launch options; the root group's ``-v`` is kept."""
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
        if p.name in LAUNCH_PARAMS or p.name not in ctx.params:
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


def launch(nodes: Nodes, argv: List[str], verbose: Optional[bool] = None) -> None:
    """Run ``robustedge ARGV`` under torchrun with this node's share of ``nodes``. Rank 0's
    output passes through; on failure raise one :class:`RobustEdgeError` line naming the
    rank (or what this node lost)."""
    verbose = "-v" in argv if verbose is None else verbose
    args = [*nodes.torchrun_args(argv), "--tee=2", "-m", "robustedge.cli", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("LOGLEVEL", "INFO" if verbose else "ERROR")
    env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] = PREFIX_TEMPLATE
    agent = Agent(args, env)
    log = JobLog()
    try:
        for line in agent.stderr:
            log.read(line.rstrip("\n"))
            if verbose:
                sys.stderr.write(line)
        rc = agent.wait()
    except KeyboardInterrupt:
        agent.terminate()
        raise
    if rc != 0:
        raise RobustEdgeError(log.failure(nodes, rc))


class Agent:
    """torchrun's agent (``python -m torch.distributed.run ARGS``) with its stderr in a pipe.

    It is this process forked: the launcher has imported torch already, and a new
    interpreter would spend about 1.5 s of CPU importing it again, on every node of every
    job. The child runs torchrun's ``main`` as that interpreter would (its environment
    ``env``, its exit code, a traceback on stderr when it raises). While other threads run
    (a fork copies the locks they hold) it is a new interpreter instead."""

    def __init__(self, args: List[str], env: Dict[str, str]) -> None:
        self.proc: Optional[subprocess.Popen] = None
        if threading.active_count() > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", *args]
            self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
            assert self.proc.stderr is not None
            self.stderr: IO[str] = self.proc.stderr
            return
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the agent: never returns
            os.close(read)
            os.dup2(write, 2)
            os.close(write)
            _run_agent(args, env)
        os.close(write)
        self.stderr = os.fdopen(read, "r", errors="replace")

    def wait(self) -> int:
        """The agent's exit code (minus the signal that ended it, like Popen's)."""
        if self.proc is not None:
            return self.proc.wait()
        self.stderr.close()
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def terminate(self) -> None:
        """SIGTERM the agent (it stops its ranks) and reap it."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            return
        os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)


def _run_agent(args: List[str], env: Dict[str, str]) -> NoReturn:
    """In the forked child: torchrun's ``main(args)`` as its interpreter would run it, with
    the ranks forked from here too (:mod:`robustedge.commands.forked`). The pipe is fd 2;
    sys.stderr may have been another stream (a notebook's, pytest's capture), and torchrun
    tees the ranks' lines to sys.stderr."""
    fresh_streams()
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [sys.executable, "-m", "torch.distributed.run", *args]

    def agent() -> None:
        from torch.distributed.run import main

        fork_ranks_in_this_agent()
        main(args)

    run_as_main(agent)


class JobLog:
    """What a failed job's stderr says: each local rank's error lines, torchrun's own."""

    def __init__(self) -> None:
        self.errors: List[str] = []  # "rank R: message", in order
        self.agent: List[str] = []  # torchrun's (the node agent's) exception lines

    def read(self, line: str) -> None:
        found = RANK_LINE.match(line)
        if found:
            rank, text = int(found.group(1)), TORCH_RANK.sub("", found.group(2)).strip()
            if ERROR_LINE.match(text):
                self.errors.append(f"rank {rank}: {short(text.removeprefix('error: '))}")
        elif ERROR_LINE.match(line.strip()) and "ChildFailedError" not in line:
            self.agent.append(line.strip())

    def failure(self, nodes: Nodes, rc: int) -> str:
        """The one line a failed job ends with: the first rank's own error; else, what this
        node lost (the rendezvous, or its peers: another node stopped first)."""
        head = f"{nodes.describe()} job failed"
        own = [e for e in self.errors if not any(s in e for s in SECONDARY)]
        if own:
            return f"{head}: {own[0]}"
        lost = [a for a in self.agent if "Rendezvous" in a or "DistStore" in a]
        if lost:
            found = AGENT_ERROR.search(lost[-1])
            what = f"{found.group(1)}: {short(found.group(2))}" if found else short(lost[-1])
            return (
                f"{head}: this node lost the rendezvous at {nodes.endpoint} ({what}); "
                "the node hosting it stopped?"
            )
        if self.errors:
            peer = "another node" if nodes.nnodes > 1 else "another process"
            return f"{head}: {self.errors[0]} ({peer} stopped first)"
        if self.agent:
            return f"{head}: torchrun: {short(self.agent[-1])}"
        return f"{head} (torchrun exit code {rc}; rerun with -v for its log)"


def short(text: str) -> str:
    """An error message without a C++ source prefix and torch's advice that follows it."""
    text = CXX_PREFIX.sub("", text.strip())
    for cut in (". This is typically", ". See inner", ". Did the remote"):
        text = text.split(cut)[0]
    return text.rstrip(".")
