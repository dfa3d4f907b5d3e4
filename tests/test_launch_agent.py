"""torchrun's agent as `robustedge ... --nproc N` starts it (commands/launch.Agent): forked from
the launcher when it is the only thread, a new interpreter otherwise. Both give the same exit
code and the ranks' prefixed stderr. The jobs run a stdlib module as the rank (no torch in the
rank), in a fresh interpreter of their own (a pytest worker may have threads of earlier tests)
whose sys.stderr is not fd 2, as in a notebook."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ARGS = ["--standalone", "--nnodes", "1", "--nproc-per-node", "1", "--tee=2", "-m"]
FAILING_RANK = ["json.tool", "--no-such-flag"]  # argparse: exit 2


def run_agent(module: list, threaded: bool) -> dict:
    """Exit code, stderr and whether it was forked, of a one-rank job running ``module``."""
    import os

    from robustedge.commands.launch import PREFIX_TEMPLATE, Agent

    env = {
        **os.environ,
        "LOGLEVEL": "ERROR",
        "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": PREFIX_TEMPLATE,
    }
    stop = threading.Event()
    other = threading.Thread(target=stop.wait) if threaded else None
    if other is not None:
        other.start()
    try:
        agent = Agent([*ARGS, *module], env)
        err = agent.stderr.read()
        return {"rc": agent.wait(), "err": err, "forked": agent.proc is None}
    finally:
        stop.set()
        if other is not None:
            other.join()


def test_agent_exit_code_and_rank_stderr():
    code = (
        f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_launch_agent import FAILING_RANK, run_agent\n"
        "import io; sys.stderr = io.StringIO()  # a notebook's stream: not fd 2\n"
        "print(json.dumps([run_agent(FAILING_RANK, t) for t in (False, True)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    forked, spawned = json.loads(proc.stdout.splitlines()[-1])
    assert forked["forked"] and not spawned["forked"]  # a fork only while no other thread runs
    for job in (forked, spawned):
        assert job["rc"] != 0  # the rank's argparse error fails the job
        assert "[default0]:" in job["err"]
        assert "unrecognized arguments: --no-such-flag" in job["err"]


PROBE = """
import atexit, json, logging, os, signal, sys
from robustedge.models import MODELS

def probe(input_shape, num_classes):
    with open(os.path.join(os.environ["PROBE_DIR"], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({
            "cmdline": open("/proc/self/cmdline").read().split("\\0"),
            "own_session": os.getsid(0) == os.getpid(),
            "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
            "sigint_raises": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
            "path0": sys.path[0],
            "path": sys.path,
            "streams": [sys.stdout.fileno(), sys.stderr.fileno()],
            "log_to_stderr": [h.stream is sys.stderr for h in logging.getLogger().handlers],
        }, f)
    return MODELS.get("tiny")(input_shape=input_shape, num_classes=num_classes)
"""


def test_robustedge_ranks_are_forked_and_start_as_new_interpreters(tmp_path, monkeypatch):
    """`--nproc 2`: each rank is forked from torchrun's agent (its command line is the
    launcher's; a new interpreter's would be `python -u -m robustedge.cli train ...`) and
    starts as that interpreter would: its own session, default
    signal handlers, sys.path from its folder and PYTHONPATH, fds 1 / 2 as its streams, logging
    configured by its own command only."""
    from conftest import run_cli

    (tmp_path / "rankprobe.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("PROBE_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    args = ["train", "--model", "rankprobe:probe", "--adversary", "none", "--epochs", "1"]
    r = run_cli(*args, "--nproc", "2", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["cmdline"][1:4] != ["-u", "-m", "robustedge.cli"]  # forked, not exec'd
        assert got["own_session"] and got["sigterm_default"] and got["sigint_raises"]
        assert got["path0"] == str(tmp_path) and str(tmp_path) in got["path"][1:]
        assert got["streams"] == [1, 2]
        assert got["log_to_stderr"] == [True]  # the rank's own basicConfig, on its stderr


RANK_CODE = """
import json, os, signal, sys, tempfile
import robustedge.cli  # as in torchrun's agent
from robustedge.commands.forked import ForkedRank
out = {}
for argv in (["--version"], ["no-such-command"]):
    with tempfile.TemporaryFile("w+") as o, tempfile.TemporaryFile("w+") as e:
        rank = ForkedRank(argv, {"PATH": "/usr/bin"}, o, e)
        code = rank.wait()
        o.seek(0); e.seek(0)
        out[argv[0]] = [code, rank.poll(), o.read(), e.read()]
with tempfile.TemporaryDirectory() as d, open(os.devnull, "w") as null:
    rank = ForkedRank(["train", "--epochs", "1000", "--out", d], {"PATH": "/usr/bin"}, null, null)
    os.killpg(rank.pid, signal.SIGTERM)  # at once, as torchrun may: its group exists already
    out["term"] = rank.wait()
print(json.dumps(out))
"""


def test_a_forked_rank_exits_as_its_interpreter_would():
    """ForkedRank (in place of Popen) gives `python -m robustedge.cli ARGS`'s exit status and
    output on the files it was given; poll() keeps the status after wait(); its process group
    exists when it returns, and SIGTERM ends the rank as it ends a new interpreter."""
    from robustedge.commands.forked import rank_argv

    proc = subprocess.run([sys.executable, "-c", RANK_CODE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    code, polled, out, err = got["--version"]
    assert (code, polled, err) == (0, 0, "") and out.startswith("robustedge, version ")
    code, polled, out, err = got["no-such-command"]
    assert (code, polled, out) == (2, 2, "") and "No such command 'no-such-command'" in err
    assert got["term"] == -signal.SIGTERM
    # only robustedge's own rank command is forked; torchrun keeps Popen for any other
    assert rank_argv(sys.executable, ("-u", "-m", "robustedge.cli", "train")) == ["train"]
    assert rank_argv(sys.executable, ("-u", "-m", "json.tool")) is None
    assert rank_argv("/usr/bin/python3-other", ("-u", "-m", "robustedge.cli")) is None
