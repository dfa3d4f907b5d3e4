"""A command on PATH whose calls are forked from one preloaded process: `robustedge`, or the
`python` that robustedge runs its TFLite converters with.

Shell scripts under test (the CI templates: tests/test_check_templates.py) call `robustedge`
about 20 times per run, and each call is a new interpreter that imports ``robustedge.cli``
(and torch): about 2 s of CPU before the command starts. Every TFLite conversion is a new
interpreter (``python -m onnx2tf ...``, robustedge.export.tflite) that imports TensorFlow and
onnx2tf: about 5 s of CPU before it converts. Here one server process pays that once: it
imports those modules and listens on a Unix socket; the command on PATH is a small client
(``python -S``, about 10 ms) that sends its arguments, working folder, environment and its
stdout / stderr file descriptors; the server forks a child that takes all of them (stdin is
empty) and runs the command, and answers with the child's exit status, which the client
exits with (a child killed by a signal kills the client with the same signal). Pipes,
``$(...)`` and redirections behave as with the real command, calls may overlap (each is
answered by its own forked handler), and every call starts from the same state as a new
interpreter (the server has run no command, like tests/cli_zygote.py's). The server ends when
its stdin closes, after reaping every child (their CPU time counts in the test process's
RUSAGE_CHILDREN).

Kinds: ``robustedge`` (the console script) and ``python`` (an interpreter that runs
``-m MODULE ARGS`` and ``-c CODE ARGS``, preloaded with TensorFlow and onnx2tf; the tests point
``ROBUSTEDGE_CONVERTER_PYTHON`` at it: tests/conftest.py).
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Set, Tuple

from cli_zygote import finish, run_main, take_caller

CLIENT = """#!{python} -S
import json, os, signal, socket, sys, time
s = socket.socket(socket.AF_UNIX)
for _ in range(6000):  # the server may still be importing: up to 10 minutes
    try:
        s.connect({sock!r})
        break
    except (FileNotFoundError, ConnectionRefusedError):
        time.sleep(0.1)
req = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
socket.send_fds(s, [b"r"], [1, 2])
s.sendall(json.dumps(req).encode())
s.shutdown(socket.SHUT_WR)
rc = int(s.makefile().read())
if rc < 0:
    signal.signal(-rc, signal.SIG_DFL)
    os.kill(os.getpid(), -rc)
sys.exit(rc)
"""
# what each kind imports before it forks
PRELOAD: Dict[str, Tuple[str, ...]] = {
    "robustedge": ("robustedge.cli",),
    "python": ("tensorflow", "onnx2tf.onnx2tf"),
}


class ForkServer:
    """The server process and the folder holding its client (``self.command``; put
    ``self.bin`` first on PATH for `robustedge`). ``stop()`` ends the server and reaps it.
    ``wait=False``: return while the server still imports (the client waits for it)."""

    def __init__(self, kind: str = "robustedge", wait: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="re-cli-"))  # short: a socket path <= 107
        self.bin = self.dir / "bin"
        self.bin.mkdir()
        sock = self.dir / "s"
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(sock), kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **_server_env(kind)},
        )
        assert self.proc.stdout is not None
        if wait:
            line = self.proc.stdout.readline()
            if line.strip() != "ready":
                self.stop()
                raise RuntimeError(f"the {kind} fork server did not start: {line!r}")
        self.command = self.bin / kind
        self.command.write_text(CLIENT.format(python=sys.executable, sock=str(sock)))
        self.command.chmod(0o755)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _server_env(kind: str) -> Dict[str, str]:
    """What the server's imports see beside the caller's environment: the converters' own
    settings for ``python`` (imported here, in the test process, not into the server)."""
    if kind != "python":
        return {}
    from robustedge.export.tflite import CONVERTER_ENV

    return CONVERTER_ENV


def run_python(argv: List[str]) -> None:
    """``python ARGV`` for ``-m MODULE ARGS`` and ``-c CODE ARGS`` in this (forked) process,
    then exit as that interpreter would: never returns."""
    flag, what, rest = argv[0], argv[1], argv[2:]
    if flag == "-m":
        sys.argv = [what, *rest]  # runpy puts the module's path in argv[0]
        finish(lambda: runpy.run_module(what, run_name="__main__", alter_sys=True))
    if flag == "-c":
        sys.argv = ["-c", *rest]
        finish(lambda: exec(compile(what, "<string>", "exec"), {"__name__": "__main__"}))
    print(f"the python fork server runs -m or -c only, got {argv[:1]}", file=sys.stderr)
    os._exit(2)


def _child(kind: str, req: dict, fds: list) -> None:
    """Become the command, on the client's stdout / stderr: never returns."""
    extra = take_caller(req, fds)
    if kind == "python":  # as `python -m` / `-c`: the working folder first
        sys.path[:1] = [os.getcwd() if req["argv"][:1] == ["-m"] else "", *extra]
    else:  # as the console script: its folder first
        sys.path[1:1] = extra
    importlib.invalidate_caches()
    (run_main if kind == "robustedge" else run_python)(req["argv"])


def _handle(kind: str, conn: socket.socket) -> None:
    """One call, in a handler forked for it: read the request, fork the command, send back
    its exit status. Never returns."""
    _, fds, _, _ = socket.recv_fds(conn, 1, 2)
    data = b""
    while chunk := conn.recv(1 << 16):
        data += chunk
    pid = os.fork()
    if pid == 0:
        conn.close()
        _child(kind, json.loads(data), fds)
    for fd in fds:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())
    conn.close()
    os._exit(0)


def serve(sock_path: str, kind: str) -> None:
    """Answer calls, each in its own handler, until stdin closes; then reap the handlers."""
    for module in PRELOAD[kind]:  # the point: imported once, before any fork
        importlib.import_module(module)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock_path)
    srv.listen(64)
    print("ready", flush=True)
    handlers: Set[int] = set()
    while True:
        ready, _, _ = select.select([srv, sys.stdin], [], [], 1.0)
        handlers -= {p for p in handlers if os.waitpid(p, os.WNOHANG)[0]}
        if sys.stdin in ready and not sys.stdin.readline():
            break
        if srv in ready:
            conn, _ = srv.accept()
            pid = os.fork()
            if pid == 0:
                srv.close()
                _handle(kind, conn)
            conn.close()
            handlers.add(pid)
    for p in handlers:
        os.waitpid(p, 0)


if __name__ == "__main__":
    sys.path[0] = os.path.dirname(sys.executable)  # as the console script (not tests/)
    serve(sys.argv[1], sys.argv[2])
