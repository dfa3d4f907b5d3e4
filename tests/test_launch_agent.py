"""torchrun's agent as `robustedge ... --nproc N` starts it (commands/launch.Agent): forked from
the launcher when it is the only thread, a new interpreter otherwise. Both give the same exit
code and the ranks' prefixed stderr; the jobs here run a stdlib module as the rank (no torch in
the rank), so each costs about one agent start."""

from __future__ import annotations

import threading

import pytest

from robustedge.commands.launch import PREFIX_TEMPLATE, Agent

ARGS = ["--standalone", "--nnodes", "1", "--nproc-per-node", "1", "--tee=2", "-m"]


def run_agent(module: list, threaded: bool) -> tuple:
    """(exit code, stderr, whether it was forked) of a one-rank job running ``module``."""
    import os

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
        return agent.wait(), err, agent.proc is None
    finally:
        stop.set()
        if other is not None:
            other.join()


@pytest.mark.parametrize("threaded", [False, True])
def test_agent_exit_code_and_rank_stderr(threaded):
    rc, err, forked = run_agent(["json.tool", "--no-such-flag"], threaded)
    assert forked is (not threaded)  # a fork only while no other thread runs
    assert rc != 0  # the rank's argparse error (exit 2) fails the job
    assert "[default0]:" in err and "unrecognized arguments: --no-such-flag" in err
