"""The one interface on-manifold attacks and training use: a :class:`Manifold`.

A manifold maps an image and its label to latent factors and back: ``encode(x, y) -> z``
(N x C x H x W, N -> N x d) and ``decode(z, y) -> x`` (N x d, N -> N x C x H x W, in [0, 1]).
``decode`` is differentiable in ``z``; the label ``y`` conditions the decoder, so every decoded
image belongs to class ``y`` by construction (Stutz et al., CVPR 2019, class-specific manifolds).

Latent units ("eta box semantics"): an on-manifold perturbation zeta is bounded by
``||zeta||_inf <= eta`` in latent units. For a VAE these are standard deviations of the
N(0, I) prior; for a known generator they are units of its normalised factor box. When
``z_bounds`` is set, ``z + zeta`` is also clamped into that box (the generator's support).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from robustedge.attacks.on_manifold import DEFAULT_ETA
from robustedge.errors import RobustEdgeError


class ManifoldMismatchError(RobustEdgeError):
    """A manifold was built for other data (name, input shape or classes) than the model."""


class Manifold:
    """Base: ``encode``/``decode`` plus the data it describes and its latent box."""

    kind = "manifold"
    default_eta = DEFAULT_ETA

    def __init__(
        self,
        data_name: str,
        input_shape: Tuple[int, int, int],
        num_classes: int,
        latent_dim: int,
        z_bounds: Optional[Tuple[float, float]] = None,
    ) -> None:
        self.data_name = data_name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.latent_dim = int(latent_dim)
        self.z_bounds = z_bounds
        self.device = torch.device("cpu")

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Latent factors ``z`` (N x d) of images ``x`` with labels ``y`` (no gradient)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images (N x C x H x W in [0, 1]) of class ``y``; differentiable in ``z``."""
        raise NotImplementedError

    def to(self, device: torch.device) -> Manifold:
        self.device = torch.device(device)
        return self

    def clamp_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Clamp ``z`` into the latent box when there is one (identity otherwise)."""
        if self.z_bounds is None:
            return z
        return torch.clamp(z, self.z_bounds[0], self.z_bounds[1])

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x, y), y)``: the on-manifold counterpart of ``x`` (eta = 0)."""
        with torch.no_grad():
            return self.decode(self.encode(x, y), y)

    def check_compatible(
        self,
        input_shape: Tuple[int, ...],
        num_classes: int,
        data_name: Optional[str] = None,
    ) -> None:
        """Raise :class:`ManifoldMismatchError` unless this manifold fits the model/data."""
        shape = tuple(int(s) for s in input_shape)
        if shape != self.input_shape or int(num_classes) != self.num_classes:
            raise ManifoldMismatchError(
                f"manifold '{self.describe()['source']}' was built for {self.data_name} inputs "
                f"{self.input_shape} with {self.num_classes} classes, but the model takes "
                f"{shape} with {num_classes} classes"
            )
        if data_name is not None and data_name != self.data_name:
            raise ManifoldMismatchError(
                f"manifold '{self.describe()['source']}' was trained on '{self.data_name}' "
                f"but the model's data set is '{data_name}'"
            )

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "source": self.data_name,
            "data": self.data_name,
            "latent_dim": self.latent_dim,
        }
