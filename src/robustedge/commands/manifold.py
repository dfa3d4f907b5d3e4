"""`robustedge manifold train`: fit a class-conditional VAE of a data set's manifold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustedge.commands.launch import is_main_rank, nproc_option
from robustedge.commands.options import config_from_options, config_options
from robustedge.manifold.train import VAEConfig


@click.group()
def manifold() -> None:
    """Generative models of the data manifold (for on-manifold attacks and training)."""


@manifold.command("train")
@config_options(VAEConfig)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@nproc_option
def train(out: Path, **opts: Any) -> None:
    """Train a class-conditional VAE; writes weights, manifold.json, metrics and a figure."""
    from robustedge.manifold.train import train_vae

    cfg = config_from_options(VAEConfig, opts)
    metrics = train_vae(cfg, out)
    if not is_main_rank():
        return
    test = metrics["test"]
    click.echo(
        f"test reconstruction: MSE/pixel {test['mse_per_pixel']:.5f}, "
        f"BCE/pixel {test['bce_per_pixel']:.4f} (n={test['n']})"
    )
    click.echo(f"figure: {out / metrics['figure']}")
    click.echo(f"run folder: {out}")


COMMANDS = [manifold]
