"""Processes forked from this one that behave as new interpreters would: torchrun's agent and,
inside it, the ranks of a ``--nproc`` / ``--nnodes`` job (:mod:`robustedge.commands.launch`).

A rank is ``python -u -m robustedge.cli ARGS``; a new interpreter spends about 3 s of CPU
importing torch and the command line before it does anything, on every rank of every job. The
agent (itself forked from the launcher) has imported both, so each rank is forked from it
instead: in its own session, its stdout / stderr on torchrun's files (or the agent's), the
rank's environment and ``sys.path``, default signal handlers, fresh logging and standard
streams, none of the agent's exit functions, and the exit status that interpreter would give.
torchrun sees a process it can poll, wait for and signal (:class:`ForkedRank`, in place of
``Popen``). Any other command keeps torchrun's own ``Popen``.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import io
import logging
import os
import runpy
import signal
import subprocess
import sys
import time
import traceback
from typing import IO, Callable, Dict, List, NoReturn, Optional, Tuple

CLI_MODULE = "robustedge.cli"
# the signals torchrun's agent handles itself; a new interpreter has the defaults
AGENT_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def exit_code(code: object) -> int:
    """The status a Python process exits with after ``sys.exit(code)`` (a message: 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_as_main(command: Callable[[], object]) -> NoReturn:
    """Run ``command`` as a new interpreter's main code, then exit as it would: 0 on return,
    SystemExit's code, 1 after a traceback on stderr; the exit functions registered meanwhile
    run (not those inherited from the process this one was forked from); streams flushed."""
    atexit._clear()
    try:
        command()
        code = 0
    except SystemExit as e:
        code = exit_code(e.code)
    except BaseException:  # what an uncaught exception does: a traceback and status 1
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def fresh_streams() -> None:
    """``sys.stdout`` / ``sys.stderr`` on fds 1 / 2, unbuffered as under ``python -u`` (the
    inherited objects may be a notebook's or a test's capture), and logging unconfigured."""
    for fd, name, errors in ((1, "stdout", "strict"), (2, "stderr", "backslashreplace")):
        raw = io.FileIO(fd, "w", closefd=False)
        stream = io.TextIOWrapper(raw, errors=errors, write_through=True, line_buffering=True)
        setattr(sys, name, stream)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def path_as_python_m(pythonpath: str) -> None:
    """``sys.path`` as ``python -m`` starts with it, in this folder: the folder first, then
    the ``pythonpath`` entries not on it yet."""
    extra = [p for p in pythonpath.split(os.pathsep) if p and p not in sys.path]
    sys.path[:1] = [os.getcwd(), *extra]
    importlib.invalidate_caches()


def rank_argv(entrypoint: str, args: Tuple[str, ...]) -> Optional[List[str]]:
    """The command line of a robustedge rank (``python -u -m robustedge.cli ARGS``), or None
    for any other command."""
    if entrypoint == sys.executable and tuple(args[:3]) == ("-u", "-m", CLI_MODULE):
        return [str(a) for a in args[3:]]
    return None


class ForkedRank:
    """A rank forked from this process: the part of ``subprocess.Popen`` torchrun uses (pid,
    returncode, poll, wait)."""

    def __init__(
        self, argv: List[str], env: Dict[str, str], stdout: Optional[IO], stderr: Optional[IO]
    ) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.args = argv
        self.returncode: Optional[int] = None
        ready, started = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the rank: never returns
            try:
                os.close(ready)
                _default_signals()
                os.setsid()  # as Popen(start_new_session=True): torchrun stops ranks by group
                os.write(started, b"1")
                os.close(started)
                _become_rank(argv, env, stdout, stderr)
            finally:
                os._exit(1)  # never back into the agent's code
        os.close(started)
        os.read(ready, 1)  # the group exists before torchrun may signal it (as Popen waits)
        os.close(ready)

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if timeout is None and self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        deadline = time.monotonic() + (timeout or 0.0)
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode


def _default_signals() -> None:
    """A new interpreter's handlers for the signals torchrun's agent handles itself."""
    for sig in AGENT_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _become_rank(
    argv: List[str], env: Dict[str, str], stdout: Optional[IO], stderr: Optional[IO]
) -> NoReturn:
    gc.freeze()  # the agent's objects (its store, its threads' state) are never collected here
    for fd, target in ((1, stdout), (2, stderr)):
        if target is not None:
            os.dup2(target.fileno(), fd)
    fresh_streams()
    os.environ.clear()
    os.environ.update(env)
    path_as_python_m(env.get("PYTHONPATH", ""))

    def cli() -> None:  # `-m robustedge.cli ARGV`: the module runs as __main__
        sys.argv = [CLI_MODULE, *argv]
        sys.modules.pop(CLI_MODULE, None)  # as in that interpreter: only __main__ runs it
        runpy.run_module(CLI_MODULE, run_name="__main__", alter_sys=True)

    run_as_main(cli)


def fork_ranks_in_this_agent() -> None:
    """Make torchrun, in this process, fork its robustedge ranks (:class:`ForkedRank`)."""
    from torch.distributed.elastic.multiprocessing import api
    from torch.distributed.elastic.multiprocessing.subprocess_handler import SubprocessHandler

    class Handler(SubprocessHandler):
        def _popen(self, args: tuple, env: Dict[str, str]):  # type: ignore[no-untyped-def]
            argv = rank_argv(args[0], args[1:])
            if argv is None:
                return super()._popen(args, env)
            return ForkedRank(argv, env, self._stdout, self._stderr)

    def handler(entrypoint: str, args: tuple, env: Dict[str, str], stdout: str, stderr: str,
                local_rank_id: int, numa_options: object = None) -> SubprocessHandler:  # fmt: skip
        return Handler(entrypoint, args, env, stdout, stderr, local_rank_id, numa_options)  # type: ignore[arg-type]

    api.get_subprocess_handler = handler  # type: ignore[assignment]
