"""`robustedge` commands for the tests, each in a fresh process forked from a preloaded one.

A user's ``robustedge ARGS`` is a new interpreter that imports ``robustedge.cli`` (and torch)
and runs ``main()``. Starting that interpreter costs about 1.5 s of CPU, paid by every CLI
call in the suite. The zygote (one per pytest worker) pays it once: it imports
``robustedge.cli``, then forks one child per call; the child takes the caller's working
folder, environment (``PYTHONPATH`` entries included) and arguments, runs ``main()`` with
stdout and stderr in files and stdin empty, and exits with the code ``python -m robustedge.cli``
would: 0 on return, SystemExit's code, 1 after a traceback. The zygote has run no command, so
every call starts from the same state as a new interpreter (nothing one call registers or
imports reaches the next). Besides ``robustedge.cli`` it has imported ``torch._dynamo``, which
torch's optimizers import on their first step (about 1 s of CPU in every call that trains);
importing it starts no thread.

Protocol on the zygote's stdin / stdout: one JSON request per line, answered by the lines
``pid N`` and ``rc N``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import List

from robustedge.commands.forked import path_as_python_m
from robustedge.commands.forked import run_as_main as finish  # the exit as `python -m` gives


def _child(req: dict) -> None:
    """Become the command: never returns."""
    files = (req["out"], req["err"])
    take_caller(req, [os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) for f in files])
    path_as_python_m(req["env"].get("PYTHONPATH", ""))
    run_main(req["argv"])


def take_caller(req: dict, out_fds: List[int]) -> List[str]:
    """Take the caller's place in a forked child: stdin empty, stdout and stderr on ``out_fds``
    (closed here), the caller's working folder and environment. Returns the caller's
    PYTHONPATH entries not yet on ``sys.path`` (where they go depends on how the command
    starts)."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for target, fd in zip((1, 2), out_fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    extra = [p for p in req["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    return [p for p in extra if p not in sys.path]


def run_main(argv: list) -> None:
    """``robustedge ARGV`` in this (forked) process, then exit as ``python -m robustedge.cli``
    would: never returns."""
    sys.argv = ["robustedge", *argv]
    import robustedge.cli

    finish(lambda: robustedge.cli.main(argv))


def serve() -> None:
    """Answer requests until stdin closes."""
    import torch._dynamo  # noqa: F401

    import robustedge.cli  # noqa: F401  (the point: imported once, before any fork)

    reply = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req)
        reply.write(f"pid {pid}\n")
        reply.flush()
        _, status = os.waitpid(pid, 0)
        reply.write(f"rc {os.waitstatus_to_exitcode(status)}\n")
        reply.flush()


if __name__ == "__main__":
    serve()
