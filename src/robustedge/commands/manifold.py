"""`robustedge manifold train`: fit a class-conditional VAE of a data set's manifold."""

from __future__ import annotations

from pathlib import Path

import click

from robustedge.commands import device_option
from robustedge.commands.launch import is_main_rank, nproc_option


@click.group()
def manifold() -> None:
    """Generative models of the data manifold (for on-manifold attacks and training)."""


@manifold.command("train")
@click.option("--data", default="digits", show_default=True, help="Data set name.")
@click.option("--data-dir", default=None, help="Folder with local data files.")
@click.option("--latent-dim", default=8, show_default=True, type=int)
@click.option("--hidden", default=128, show_default=True, type=int, help="MLP width.")
@click.option("--epochs", default=100, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--lr", default=2e-3, show_default=True, type=float)
@click.option("--beta", default=1.0, show_default=True, type=float, help="KL weight.")
@click.option("--seed", default=0, show_default=True, type=int)
@device_option()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@nproc_option
def train(
    data, data_dir, latent_dim, hidden, epochs, batch_size, lr, beta, seed, device, out
) -> None:
    """Train a class-conditional VAE; writes weights, manifold.json, metrics and a figure."""
    from robustedge.manifold.train import VAEConfig, train_vae

    cfg = VAEConfig(
        data=data,
        latent_dim=latent_dim,
        hidden=hidden,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        beta=beta,
        seed=seed,
        device=device,
        data_dir=data_dir,
    )
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
