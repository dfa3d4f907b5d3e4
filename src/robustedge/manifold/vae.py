"""A small class-conditional VAE (Kingma & Welling, 2014; Sohn et al., 2015).

MLP encoder q(z | x, y) and decoder p(x | z, y), the label given as a one-hot vector to both:
conditioning the decoder on ``y`` keeps the class of ``Dec(z + zeta, y)`` fixed, which is what
on-manifold adversarial examples need (Stutz et al., CVPR 2019). Pixels are Bernoulli means
(sigmoid outputs in [0, 1]), trained with per-pixel BCE + beta * KL.

An MLP suits the small images here (8x8 digits: ~30k parameters, well under a minute of CPU
training); the same code runs on 28x28 data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustedge.errors import CheckpointError
from robustedge.io import PathLike, atomic_path, read_json, write_json
from robustedge.manifold.base import Manifold

WEIGHTS = "manifold.safetensors"
SPEC = "manifold.json"


class CVAE(nn.Module):
    """Class-conditional VAE on flattened images; ``hidden`` units in one hidden layer pair."""

    def __init__(
        self,
        input_shape: Tuple[int, int, int],
        num_classes: int,
        latent_dim: int = 8,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        n = math.prod(self.input_shape)
        self.enc = nn.Sequential(
            nn.Linear(n + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)
        self.dec = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n),
        )

    def _onehot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y.long(), self.num_classes).float()

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(torch.cat([x.flatten(1), self._onehot(y)], 1))
        return self.mu(h), self.logvar(h).clamp(-10, 10)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.dec(torch.cat([z, self._onehot(y)], 1))
        return out.view(len(z), *self.input_shape)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z, y))

    def loss(self, x: torch.Tensor, y: torch.Tensor, beta: float = 1.0) -> Tuple[torch.Tensor, ...]:
        """(total, bce, kl), each averaged per sample; bce sums over pixels."""
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.decode_logits(z, y)
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
        return bce + beta * kl, bce, kl


class VAEManifold(Manifold):
    """A trained :class:`CVAE` as a manifold: encode = posterior mean, decode = mean image."""

    kind = "vae"

    def __init__(self, vae: CVAE, data_name: str, source: str = "") -> None:
        super().__init__(data_name, vae.input_shape, vae.num_classes, vae.latent_dim)
        self.vae = vae.eval()
        self.source = source or data_name
        for p in self.vae.parameters():
            p.requires_grad_(False)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vae.encode(x.to(self.device), y.to(self.device))[0]

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z, y.to(z.device))

    def to(self, device: torch.device) -> VAEManifold:
        super().to(device)
        self.vae.to(self.device)
        return self

    def describe(self) -> dict:
        return {**super().describe(), "source": self.source}


def save_vae(run_dir: PathLike, vae: CVAE, data_name: str, extra: Dict[str, Any]) -> None:
    """Weights (safetensors) + ``manifold.json`` (data name, input shape, classes, latent dim)."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    spec = {
        "kind": "vae",
        "data": data_name,
        "input_shape": list(vae.input_shape),
        "num_classes": vae.num_classes,
        "latent_dim": vae.latent_dim,
        **extra,
    }
    write_json(run_dir / SPEC, spec)


def load_vae(run_dir: PathLike) -> VAEManifold:
    """Rebuild a VAE manifold from its run folder (no pickle)."""
    from robustedge.models.checkpoint import load_weights

    run_dir = Path(run_dir)
    if not (run_dir / SPEC).is_file():
        raise CheckpointError(
            f"{run_dir} is not a manifold run folder (no {SPEC}; "
            "train one with `robustedge manifold train`)"
        )
    spec = read_json(run_dir / SPEC)
    try:
        vae = CVAE(
            tuple(spec["input_shape"]),
            int(spec["num_classes"]),
            int(spec["latent_dim"]),
            int(spec.get("hidden", 128)),
        )
        data_name = str(spec["data"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"bad manifold spec in {run_dir / SPEC}: {e}") from None
    load_weights(vae, run_dir / WEIGHTS)
    return VAEManifold(vae, data_name, source=str(run_dir))
