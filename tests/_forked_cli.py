"""`robustedge` commands forked from one preloaded process and started in the background, so
that a test can stop or SIGKILL one mid-run (test_resume.py, test_crash.py).

The zygote is conftest's (tests/cli_zygote.py: each command a fresh fork of a process that has
imported ``robustedge.cli`` and ``torch._dynamo`` and run nothing; the child takes the caller's
folder, environment and arguments, and exits with the code ``python -m robustedge.cli`` would).
Here it has also imported the training and compression code before it forks: a killed run
starts in milliseconds instead of 2-3 s of CPU, so a test can kill and resume runs whose epochs
take a fraction of a second."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

ZYGOTE = Path(__file__).with_name("cli_zygote.py")
PRELOAD = ("robustedge.training.run", "robustedge.compress.pipeline")


class Call:
    """One command running in a child of the zygote."""

    def __init__(self, zygote: ForkedCli, pid: int, out: Path, err: Path) -> None:
        self.zygote, self.pid, self.out, self.err = zygote, pid, out, err
        self.rc: Optional[int] = None

    def wait(self, timeout: float = 600) -> Optional[int]:
        """The exit code (negative: the signal that ended it); None while it still runs after
        ``timeout`` seconds."""
        if self.rc is None:
            self.rc = self.zygote.reply("rc", timeout, running_ok=True)
        return self.rc

    def stderr(self) -> str:
        return self.err.read_text() if self.err.exists() else ""


class ForkedCli:
    """The client of one zygote process; one command at a time."""

    def __init__(self, env: Optional[Dict[str, str]] = None, preload: Sequence[str] = ()) -> None:
        """``preload``: more modules to import before forking (beyond ``PRELOAD``)."""
        self.env = dict(os.environ if env is None else env)
        self.tmp = Path(tempfile.mkdtemp(prefix="forked-cli-"))
        code = "import importlib, runpy\n"
        code += "".join(f"importlib.import_module({m!r})\n" for m in (*PRELOAD, *preload))
        code += f"runpy.run_path({str(ZYGOTE)!r}, run_name='__main__')\n"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ZYGOTE.parent,
            env=self.env,
        )
        self.calls = 0
        # the zygote answers once it has imported everything: a first command waits for that,
        # so that the callers' commands are timed without it
        first = self.start(["--help"])
        assert first.wait() == 0, first.stderr()

    def reply(self, word: str, timeout: float, running_ok: bool = False) -> Optional[int]:
        """The zygote's next ``word N`` line: N (None after ``timeout`` if ``running_ok``)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready and running_ok:
            return None
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith(word + " "):
            self.proc.kill()
            raise RuntimeError(f"the CLI zygote gave {line!r} instead of {word!r}")
        return int(line.split()[1])

    def start(self, args: Sequence[str], cwd: Optional[Path] = None) -> Call:
        """`robustedge ARGS` in a new child; returns at once."""
        self.calls += 1
        out, err = self.tmp / f"{self.calls}.out", self.tmp / f"{self.calls}.err"
        req = dict(argv=[str(a) for a in args], cwd=str(cwd or os.getcwd()), env=self.env)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({**req, "out": str(out), "err": str(err)}) + "\n")
        self.proc.stdin.flush()
        pid = self.reply("pid", 60)
        assert pid is not None
        return Call(self, pid, out, err)

    def close(self) -> None:
        """End the zygote and reap it (its CPU time, and its children's, then counts in this
        process's RUSAGE_CHILDREN as a subprocess's would)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for p in self.tmp.iterdir():
            p.unlink()
        self.tmp.rmdir()


def _stat(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def kill_at(call: Call, ckpt: Path, ready: Callable[[dict], bool], load) -> Optional[dict]:
    """SIGKILL ``call`` at the first checkpoint ``ckpt`` it writes that satisfies ``ready``;
    that checkpoint (``load(ckpt)``), or None when the run ended first. Each new checkpoint
    is read with the run stopped (SIGSTOP), so the one judged is the one left at the kill."""
    seen = _stat(ckpt)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        now = _stat(ckpt)
        if now is not None and now != seen:
            try:
                os.kill(call.pid, signal.SIGSTOP)
            except ProcessLookupError:
                return None
            seen = _stat(ckpt)
            try:
                state = load(ckpt)
            except Exception:  # noqa: BLE001 - not a whole checkpoint: look again
                state, seen = None, None
            if state is not None and ready(state):
                os.kill(call.pid, signal.SIGKILL)  # stopped or not, it ends here
                call.wait()
                return state
            os.kill(call.pid, signal.SIGCONT)
        elif _ended(call.pid):
            return None
        time.sleep(0.005)
    return None


def _ended(pid: int) -> bool:
    """The zygote's child ``pid`` has exited (a zombie until the zygote reaps it, or gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"
