"""`robustedge train` and `robustedge eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from robustedge.commands import device_option, parse_kv, print_table
from robustedge.commands.launch import is_main_rank, nproc_option


def suite_option(help: str) -> click.Option:
    """The one ``--suite NAME`` option (a robustedge.attacks.suite.SUITES name)."""
    return click.option("--suite", default=None, metavar="NAME", help=help)


SUITE_HELP = (
    "Also the worst case per image over the named attack suite: worst-case (PGD-20x5, "
    "APGD-CE-100, APGD-DLR-100, Square-1000) | worst-case-quick (PGD-10x2, APGD-CE-25, "
    "APGD-DLR-25, Square-200) [default: none]."
)


@click.command()
@click.option("--data", default="digits", show_default=True, help="Data set name.")
@click.option(
    "--data-dir", default=None, help="Folder with local data files (else $ROBUSTEDGE_DATA_DIR)."
)
@click.option(
    "--model", default="lenet5", show_default=True, help="Model name or module.path:factory."
)
@click.option(
    "--model-arg",
    "model_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Model factory argument (repeatable), e.g. width=2.",
)
@click.option(
    "--adversary",
    default="pgd",
    show_default=True,
    help="none | fgsm | pgd | trades | onmanifold | mixed (the last two need --manifold).",
)
@click.option(
    "--eps", default=0.1, show_default=True, type=float, help="Linf budget in [0,1] pixel units."
)
@click.option("--steps", default=10, show_default=True, type=int, help="PGD/TRADES steps.")
@click.option("--epochs", default=60, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--lr", default=2e-3, show_default=True, type=float)
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "sgd"]))
@click.option("--seed", default=0, show_default=True, type=int)
@device_option(help="Where to train.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint/last.pt.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--manifold", default=None, help="VAE run folder or 'synthetic' (on-manifold AT).")
@click.option(
    "--onmanifold-ratio",
    default=0.5,
    show_default=True,
    type=float,
    help="Fraction of each batch made on-manifold adversarial (onmanifold/mixed).",
)
@click.option("--eta", default=None, type=float, help="On-manifold latent budget (default 0.3).")
@suite_option(SUITE_HELP + " Run on the final model at --eps.")
@nproc_option
def train(
    data,
    data_dir,
    model,
    model_args,
    adversary,
    eps,
    steps,
    epochs,
    batch_size,
    lr,
    optimizer,
    seed,
    device,
    out,
    resume,
    no_progress,
    manifold,
    onmanifold_ratio,
    eta,
    suite,
) -> None:
    """Train a (robust) model; writes weights, config.yaml and metrics.json to OUT.

    Data-parallel: ``--nproc N`` (or ``torchrun --nproc-per-node N -m robustedge.cli train``);
    ``--batch-size`` is then the global batch, split evenly over the processes."""
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    cfg = TrainConfig(
        data=data,
        model=model,
        model_kwargs=parse_kv(model_args, "--model-arg"),
        adversary=adversary,
        eps=eps,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        device=device,
        data_dir=data_dir,
        manifold=manifold,
        onmanifold_ratio=onmanifold_ratio,
        eta=eta,
    )
    metrics = train_run(
        cfg,
        out,
        resume=resume,
        progress=not no_progress,
        manifold=_manifold(manifold, data_dir),
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
@suite_option(SUITE_HELP + " Run at every --eps.")
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
