"""torchrun's agent as `robustedge ... --nproc N` starts it (commands/launch.Agent): forked from
the launcher when it is the only thread, a new interpreter otherwise. Both give the same exit
code and the ranks' prefixed stderr. The jobs run a stdlib module as the rank (no torch in the
rank), in a fresh interpreter of their own (a pytest worker may have threads of earlier tests)
whose sys.stderr is not fd 2, as in a notebook."""

from __future__ import annotations

import json
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
