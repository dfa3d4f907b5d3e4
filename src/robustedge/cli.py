"""The `robustedge` command line: a thin click group.

Each command builds a config, calls one library function and prints a summary. User
mistakes become one line on stderr and exit code 2; no tracebacks.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from robustedge.commands import parse_kv
from robustedge.errors import RobustEdgeError

DEVICE = click.option(
    "--device",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where to train.",
)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
@click.version_option(package_name="robustedge")
def cli(verbose: bool) -> None:
    """Robust, compressed CNNs from PyTorch to ARM boards."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@cli.command()
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
@DEVICE
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
) -> None:
    """Train a (robust) model; writes weights, config.yaml and metrics.json to OUT."""
    from robustedge.config import TrainConfig
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
    metrics = train_run(cfg, out, resume=resume, progress=not no_progress)
    _print_table(metrics)
    click.echo(f"run folder: {out}")


@cli.command("eval")
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
def eval_cmd(
    run, attacks, eps_list, steps, restarts, seed, as_json, manifold, eta, corruptions
) -> None:
    """Clean and robust accuracy of RUN on its test split; writes RUN/eval.json."""
    from robustedge.attacks import ATTACKS
    from robustedge.training.evaluate import default_spec
    from robustedge.training.run import eval_run

    specs = []
    for name in attacks:
        ATTACKS.get(name)
        if name == "onmanifold":
            from robustedge.attacks.on_manifold import eval_spec

            specs.append(eval_spec(eta, manifold, steps, restarts))
            continue
        for eps in eps_list:
            s = default_spec(name, eps)
            specs.append(
                type(s)(
                    name,
                    eps,
                    steps=s.steps if steps is None else steps,
                    restarts=s.restarts if restarts is None else restarts,
                )
            )
    result = eval_run(run, specs, seed=seed)
    if corruptions:
        from robustedge.attacks.corruptions import corruption_eval_run

        result = corruption_eval_run(run, result, seed=seed)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_table(result)


def _print_table(metrics: dict) -> None:
    """Clean accuracy then one row per attack, each naming its settings."""
    click.echo(f"{'evaluation':<44} {'accuracy':>8}")
    click.echo(f"{'clean':<44} {100 * metrics['clean_acc']:>7.2f}%")
    for r in metrics.get("robust", []):
        label = f"{r['attack']} eps={r['eps']:g}"
        if r.get("steps"):
            label += f" steps={r['steps']}"
        if r.get("restarts", 1) > 1:
            label += f" restarts={r['restarts']}"
        click.echo(f"{label:<44} {100 * r['acc']:>7.2f}%")
    if "corruptions" in metrics:
        click.echo(
            f"{'corruptions (mean over types and levels)':<44} "
            f"{100 * metrics['corruptions']['mean']:>7.2f}%"
        )


def _register_commands() -> None:
    import importlib

    from robustedge.commands import MODULES

    for name in MODULES:
        module = importlib.import_module(f"robustedge.commands.{name}")
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point: run the group, turning user mistakes into one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name="robustedge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (RobustEdgeError, ValueError, FileNotFoundError, PermissionError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
