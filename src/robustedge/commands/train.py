"""`robustedge train` and `robustedge eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import click

from robustedge.commands import print_table
from robustedge.commands.launch import is_main_rank, nproc_option
from robustedge.commands.options import config_from_options, config_options, lazy_option
from robustedge.training.config import TrainConfig


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
@suite_option(" Run on the final model at --eps.")
@nproc_option
def train(out: Path, resume: bool, no_progress: bool, suite: Optional[str], **opts: Any) -> None:
    """Train a (robust) model; writes weights, config.yaml and metrics.json to OUT.

    Data-parallel: ``--nproc N`` (or ``torchrun --nproc-per-node N -m robustedge.cli train``);
    ``--batch-size`` is then the global batch, split evenly over the processes."""
    from robustedge.training.run import train_run

    cfg = config_from_options(TrainConfig, opts)
    metrics = train_run(
        cfg,
        out,
        resume=resume,
        progress=not no_progress,
        manifold=_manifold(cfg.manifold, cfg.data_dir),
        suite=suite,
    )
    if is_main_rank():
        print_table(metrics)
        if metrics.get("world_size", 1) > 1:
            click.echo(
                f"data-parallel: {metrics['world_size']} processes, "
                f"global batch {metrics['global_batch_size']}"
            )
        click.echo(f"run folder: {out}")


@click.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    default=("fgsm", "pgd"),
    show_default=True,
    help="Attack name (repeatable): fgsm | pgd | square | onmanifold (needs --manifold).",
)
@click.option(
    "--eps",
    "eps_list",
    multiple=True,
    type=float,
    default=(0.1,),
    show_default=True,
    help="Linf budget (repeatable).",
)
@click.option("--steps", default=None, type=int, help="Override steps (PGD) / queries (Square).")
@click.option("--restarts", default=None, type=int, help="Override random restarts.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--manifold", default=None, help="VAE run folder or 'synthetic' (onmanifold).")
@click.option(
    "--eta",
    default=0.3,
    show_default=True,
    type=float,
    help="On-manifold latent budget (latent units; replaces --eps for onmanifold).",
)
@click.option("--corruptions", is_flag=True, help="Also natural-corruption accuracy (5 levels).")
@suite_option(" Run at every --eps.")
def eval_cmd(
    run, attacks, eps_list, steps, restarts, seed, as_json, manifold, eta, corruptions, suite
) -> None:
    """Clean and robust accuracy of RUN on its test split; writes RUN/eval.json."""
    from robustedge.training.evaluate import EvalPlan
    from robustedge.training.run import eval_run

    plan = EvalPlan(
        attacks=tuple(attacks),
        eps=tuple(eps_list),
        pgd_steps=steps,
        square_queries=steps,
        restarts=restarts,
        manifold=manifold,
        eta=eta,
        corruptions=corruptions,
        suite=suite,
    )
    plan.specs()  # refuses a bad attack setting before anything is loaded
    resources = {"manifold": _manifold(manifold)} if plan.needs_manifold else None
    result = eval_run(run, plan, seed=seed, resources=resources)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_table(result)


def _manifold(source: Optional[str], data_dir: Optional[str] = None):
    """The Manifold object of ``--manifold`` (None when not given)."""
    if source is None:
        return None
    from robustedge.manifold import load_manifold

    return load_manifold(source, data_dir=data_dir)


COMMANDS = [train, eval_cmd]
