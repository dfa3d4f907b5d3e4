"""A `robustedge` command on PATH whose calls are forked from one preloaded process.

Shell scripts under test (the CI templates: tests/test_check_templates.py) call `robustedge`
about 20 times per run, and each call is a new interpreter that imports ``robustedge.cli``
(and torch): about 2 s of CPU before the command starts. Here one server process pays that
once: it imports ``robustedge.cli`` and listens on a Unix socket; the `robustedge` on PATH is
a small client (``python -S``, about 10 ms) that sends its arguments, working folder,
environment and its stdout / stderr file descriptors; the server forks a child that takes all
of them (stdin is empty) and runs ``main()``, and answers with the child's exit status, which
the client exits with. Pipes, ``$(...)`` and redirections behave as with the console script,
and every call starts from the same state as a new interpreter (the server has run no command,
like tests/cli_zygote.py's). The server ends when its stdin closes, after reaping every child
(their CPU time counts in the test process's RUSAGE_CHILDREN).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from cli_zygote import run_main

CLIENT = """#!{python} -S
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect({sock!r})
req = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
socket.send_fds(s, [b"r"], [1, 2])
s.sendall(json.dumps(req).encode())
s.shutdown(socket.SHUT_WR)
rc = int(s.makefile().read())
sys.exit(rc if rc >= 0 else 128 - rc)
"""


class ForkServer:
    """The server process and the folder holding the `robustedge` client (put it first on
    PATH). ``stop()`` ends the server and reaps it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="re-cli-"))  # short: a socket path <= 107
        self.bin = self.dir / "bin"
        self.bin.mkdir()
        sock = self.dir / "s"
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(sock)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the robustedge fork server did not start: {line!r}")
        client = self.bin / "robustedge"
        client.write_text(CLIENT.format(python=sys.executable, sock=str(sock)))
        client.chmod(0o755)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _child(req: dict, fds: list) -> None:
    """Become the command, on the client's stdout / stderr: never returns."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for target, fd in zip((1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    extra = [p for p in req["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:0] = [p for p in extra if p not in sys.path]
    run_main(req["argv"])


def _answer(srv: socket.socket) -> None:
    """One call: read the request, fork the command, send back its exit status."""
    conn, _ = srv.accept()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 1, 2)
        data = b""
        while chunk := conn.recv(1 << 16):
            data += chunk
        pid = os.fork()
        if pid == 0:
            srv.close()
            _child(json.loads(data), fds)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())


def serve(sock_path: str) -> None:
    """Answer calls one at a time until stdin closes."""
    import robustedge.cli  # noqa: F401  (the point: imported once, before any fork)

    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock_path)
    srv.listen(16)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([srv, sys.stdin], [], [])
        if sys.stdin in ready and not sys.stdin.readline():
            return
        if srv in ready:
            _answer(srv)


if __name__ == "__main__":
    sys.path[0] = os.path.dirname(sys.executable)  # as the console script (not tests/)
    serve(sys.argv[1])
