"""`robustedge train` and `robustedge eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import click

from robustedge.commands import print_table
from robustedge.commands.launch import is_main_rank, nproc_option
from robustedge.commands.options import config_from_options, config_options, lazy_option
from robustedge.data import DOWNLOADS
from robustedge.training.config import TrainConfig
from robustedge.training.evaluate import EvalPlan


def suite_option(where: str) -> Callable:
    """The one ``--suite NAME`` option (a robustedge.attacks.suite.SUITES name); its help
    lists the registered suites with their attacks."""

    def help_fn() -> str:
        from robustedge.attacks.suite import suites_help

        return f"Also the worst case per image over an attack suite: {suites_help()}.{where}"

    return lazy_option("--suite", default=None, metavar="NAME", help_fn=help_fn)


@click.command()
@config_options(TrainConfig)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint/last.pt.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@lazy_option(
    "--download",
    is_flag=True,
    help_fn=lambda: f"First fetch --data ({DOWNLOADS.known(' | ')}) into --data-dir [default: "
    "$ROBUSTEDGE_DATA_DIR or ~/.cache/robustedge/data], each archive's sha256 checked.",
)
@suite_option(" Run on the final model at --eps.")
@nproc_option
def train(
    out: Path, resume: bool, no_progress: bool, download: bool, suite: Optional[str], **opts: Any
) -> None:
    """Train a (robust) model; writes weights, config.yaml and metrics.json to OUT.

    Data-parallel: ``--nproc N`` (or ``torchrun --nproc-per-node N -m robustedge.cli train``);
    ``--batch-size`` is then the global batch, split evenly over the processes."""
    from robustedge import api

    cfg = config_from_options(TrainConfig, opts)
    result = api.train(
        cfg, out=out, resume=resume, progress=not no_progress, suite=suite, download=download
    )
    if is_main_rank():
        print_table(result.to_json())
        if result.world_size > 1:
            nodes = result.to_json().get("nodes", 1)
            click.echo(
                f"data-parallel: {result.world_size} processes, "
                + (f"{nodes} nodes, " if nodes > 1 else "")
                + f"global batch {result.global_batch_size}"
            )
        click.echo(f"run folder: {out}")


@click.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@config_options(EvalPlan, exclude=("suite",))
@click.option(
    "--steps",
    default=None,
    type=int,
    help="Shorthand: --pgd-steps and --square-queries both set to STEPS.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the attacks.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@suite_option(" Run at every --eps.")
def eval_cmd(run: Path, steps: Optional[int], seed: int, as_json: bool, **opts: Any) -> None:
    """Clean and robust accuracy of RUN on its test split; writes RUN/eval.json."""
    from robustedge import api

    if steps is not None:
        if opts.get("pgd_steps") is not None or opts.get("square_queries") is not None:
            raise click.UsageError("give --steps or --pgd-steps / --square-queries, not both")
        opts = {**opts, "pgd_steps": steps, "square_queries": steps}
    plan = config_from_options(EvalPlan, opts)  # refuses a bad setting before any loading
    result = api.evaluate(run, plan, seed=seed).to_json()
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_table(result)


COMMANDS = [train, eval_cmd]
