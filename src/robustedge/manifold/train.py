"""`robustedge manifold train`: fit a class-conditional VAE and write a manifold run folder.

Run folder: ``manifold.safetensors`` + ``manifold.json`` (data, input shape, classes, latent
dim), ``config.yaml`` (the resolved :class:`VAEConfig`), ``metrics.json`` (per-pixel MSE and
BCE of test reconstructions) and ``reconstructions.png`` (originals above reconstructions).
Under torchrun each rank takes its share of every global batch and the gradients are averaged
(:mod:`robustedge.distributed`); only rank 0 writes. A streamed data set
(:mod:`robustedge.data.source`) is read batch by batch; its test error is measured on a seeded
subset of ``STREAMED_TEST`` images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from robustedge import distributed
from robustedge.config import ConfigMixin, check_positive, setting
from robustedge.data import DATASETS
from robustedge.data.source import ImageSource, seeded_subset
from robustedge.devices import DEVICES, check_device
from robustedge.errors import RobustEdgeError
from robustedge.io import write_json, write_yaml
from robustedge.manifold.vae import CVAE, VAEManifold, save_vae
from robustedge.training.tensors import as_images

logger = logging.getLogger(__name__)
FIGURE = "reconstructions.png"
# the reconstruction error of a streamed test split is measured on this many of its images
STREAMED_TEST = 2048


@dataclass(frozen=True)
class VAEConfig(ConfigMixin):
    """Recipe of a manifold run; saved as config.yaml. Every field is a setting: the
    `manifold train` options are generated from them."""

    data: str = setting("digits", help="Data set: {choices}.", choices=DATASETS.names)
    latent_dim: int = setting(8, help="Latent dimensions of the CVAE.")
    hidden: int = setting(128, help="MLP width.")
    epochs: int = setting(100, help="Training epochs.")
    batch_size: int = setting(64, help="Global batch (split evenly over --nproc processes).")
    lr: float = setting(2e-3, help="Adam learning rate.")
    beta: float = setting(1.0, help="KL weight.")
    seed: int = setting(0, help="Random seed (weights, batches, figure samples).")
    device: str = setting("auto", help="Where to train: {choices}.", choices=lambda: DEVICES)
    data_dir: Optional[str] = setting(
        None, help="Folder with local data files [default: $ROBUSTEDGE_DATA_DIR]."
    )

    def __post_init__(self) -> None:
        DATASETS.get(self.data)
        check_device(self.device)
        check_positive(self, "latent_dim", "hidden", "epochs", "batch_size", "lr")
        if not (self.beta >= 0):
            raise ValueError(f"beta must be >= 0, got {self.beta}")


def fit_vae(
    vae: CVAE, x: torch.Tensor, y: torch.Tensor, cfg: VAEConfig, device: torch.device
) -> list:
    """Adam on BCE + beta * KL; returns per-epoch mean losses. Under torchrun, rank r of W
    takes every W-th sample of each global batch (from r), its loss is weighted by its share
    and the gradients are averaged, so each step is the one-process step on the whole batch."""
    world = distributed.world()
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    params = list(vae.parameters())
    history = []
    vae.train()
    distributed.check_identical(params, "initial VAE weights")
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), cfg.batch_size):
            batch = perm[i : i + cfg.batch_size]
            idx = batch[world.rank :: world.size]
            opt.zero_grad(set_to_none=True)
            if len(idx):
                loss, _, _ = vae.loss(x[idx].to(device), y[idx].to(device), cfg.beta)
                (loss * (len(idx) * world.size / len(batch))).backward()
                total += loss.item() * len(idx)
            distributed.average_gradients(params)
            opt.step()
        sched.step()
        (total,) = distributed.all_sum([total], device)
        distributed.check_identical(params, f"VAE weights after epoch {epoch + 1}")
        history.append({"epoch": epoch + 1, "loss": total / len(x)})
        logger.info("vae epoch %d: loss %.3f", epoch + 1, total / len(x))
    return history


@torch.no_grad()
def reconstruction_error(manifold: VAEManifold, x: torch.Tensor, y: torch.Tensor) -> Dict:
    """Per-pixel MSE and BCE of ``Dec(Enc(x))`` against ``x`` (posterior means)."""
    rec = manifold.reconstruct(x, y).cpu().clamp(1e-6, 1 - 1e-6)
    return {
        "mse_per_pixel": float(F.mse_loss(rec, x)),
        "bce_per_pixel": float(F.binary_cross_entropy(rec, x)),
        "n": int(len(x)),
    }


def save_figure(path: Path, x: np.ndarray, rec: np.ndarray, title: str) -> None:
    """Originals (top row) above reconstructions (bottom row), first channel shown grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustedge.io import atomic_path

    n = len(x)
    fig, axes = plt.subplots(2, n, figsize=(n * 0.9, 2.2))
    for i in range(n):
        for row, img in enumerate((x[i], rec[i])):
            ax = axes[row, i]
            shown = img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0]
            ax.imshow(shown, cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
    axes[0, 0].set_title("original", fontsize=7, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=7, loc="left")
    fig.suptitle(title, fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def train_vae(cfg: VAEConfig, out: Path) -> Dict:
    """Train a CVAE per ``cfg`` into ``out``; returns the metrics written to metrics.json."""
    from robustedge.devices import resolve_device

    out = Path(out)
    device = distributed.rank_device(resolve_device(cfg.device))
    with distributed.session(device) as world:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RobustEdgeError(f"--out {out} exists and is not an empty folder")
        distributed.barrier()
        return _train_vae(cfg, out, device, world)


def _train_vae(cfg: VAEConfig, out: Path, device: torch.device, world) -> Dict:
    from robustedge.data import load_dataset

    data = load_dataset(cfg.data, cfg.data_dir)
    torch.manual_seed(cfg.seed)
    vae = CVAE(data.input_shape, data.num_classes, cfg.latent_dim, cfg.hidden).to(device)
    xt, yt = as_images(data.x_train), torch.as_tensor(data.y_train)  # streamed: per batch
    history = fit_vae(vae, xt, yt, cfg, device)
    scale = {"world_size": world.size, "global_batch_size": cfg.batch_size}
    scale.update(distributed.node_record(world))
    if not world.main:
        return {"kind": "manifold", "rank": world.rank, **scale, "history": history}
    vae = vae.cpu().eval()
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", cfg.to_dict())
    save_vae(out, vae, data.name, {"hidden": cfg.hidden})
    manifold = VAEManifold(vae, data.name, source=str(out))
    x_test, y_test = data.x_test, data.y_test
    if isinstance(x_test, ImageSource):  # the test error of a streamed set: a seeded subset
        x_test, y_test = seeded_subset(x_test, y_test, STREAMED_TEST, cfg.seed)
    xs, ys = torch.as_tensor(x_test), torch.as_tensor(y_test)
    test = reconstruction_error(manifold, xs, ys)
    pick = np.random.default_rng(cfg.seed).choice(len(xs), size=min(10, len(xs)), replace=False)
    rec = manifold.reconstruct(xs[pick], ys[pick]).numpy()
    save_figure(
        out / FIGURE,
        x_test[pick],
        rec,
        f"{data.name} CVAE d={cfg.latent_dim}: test MSE/pixel {test['mse_per_pixel']:.4f}",
    )
    metrics = {
        "kind": "manifold",
        "model": "cvae",
        "data": data.name,
        "latent_dim": cfg.latent_dim,
        "test": test,
        "figure": FIGURE,
        **scale,
        "history": history,
    }
    write_json(out / "metrics.json", metrics)
    return metrics
