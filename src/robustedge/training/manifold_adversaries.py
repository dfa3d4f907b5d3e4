"""On-manifold training adversaries, registered in ``robustedge.training.ADVERSARIES``.

- ``onmanifold`` (Stutz et al., CVPR 2019): each batch is split; a fraction ``ratio`` (default
  0.5, Stutz's half-and-half) is replaced by on-manifold adversarial examples (latent budget
  ``eta``, :class:`~robustedge.attacks.on_manifold.OnManifold` with ``steps`` steps), the rest
  stays clean.
- ``mixed``: a fraction ``ratio`` on-manifold adversarial, the rest off-manifold Linf PGD
  examples with pixel budget ``eps`` (Madry et al.), so the model sees both kinds each batch.

Both need ``manifold=``, a Manifold object (``robustedge.manifold.load_manifold`` makes one
from a VAE run folder or ``"synthetic"``; ``source=`` names it in results). Given
``input_shape``/``num_classes``/``data_name`` they check the manifold fits at construction.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn as nn

from robustedge.attacks.on_manifold import OnManifold
from robustedge.errors import RobustEdgeError
from robustedge.training.adversaries import (
    ADVERSARIES,
    TRAIN_STEPS,
    PGDAdversary,
    TrainingAdversary,
)


@ADVERSARIES.register("onmanifold")
class OnManifoldAdversary(TrainingAdversary):
    """Clean + on-manifold adversarial examples, ``ratio`` of each batch adversarial."""

    name = "onmanifold"

    def __init__(
        self,
        eps: float = 0.0,
        steps: int = TRAIN_STEPS,
        manifold: Any = None,
        ratio: float = 0.5,
        eta: Optional[float] = None,
        input_shape: Optional[Tuple[int, ...]] = None,
        num_classes: Optional[int] = None,
        data_name: Optional[str] = None,
        source: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(eps, steps or 10)
        if manifold is None:
            raise RobustEdgeError(
                f"adversary '{self.name}' needs a manifold (--manifold VAE_RUN or synthetic)"
            )
        if isinstance(manifold, str) or not hasattr(manifold, "decode"):
            raise RobustEdgeError(
                f"adversary '{self.name}' needs a manifold object, not '{manifold}' "
                "(load it with robustedge.manifold.load_manifold)"
            )
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"on-manifold ratio must lie in [0, 1], got {ratio}")
        self.manifold = manifold
        if input_shape is not None and num_classes is not None:
            self.manifold.check_compatible(input_shape, num_classes, data_name)
        self.ratio = float(ratio)
        self.eta = float(self.manifold.default_eta if eta is None else eta)
        self.source = source or self.manifold.describe()["source"]

    def on_manifold(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        attack = OnManifold(
            model, self.eta, self.manifold, steps=self.steps, generator=self.generator
        )
        return attack.perturb(x, y)

    def rest(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the non-on-manifold part of the batch becomes (here: stays clean)."""
        return x

    def examples(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = int(round(self.ratio * len(x)))
        parts = []
        if k > 0:
            parts.append(self.on_manifold(model, x[:k], y[:k]))
        if k < len(x):
            parts.append(self.rest(model, x[k:], y[k:]))
        model.train()
        return torch.cat(parts).detach()

    def describe(self) -> dict:
        return {**super().describe(), "eta": self.eta, "ratio": self.ratio, "manifold": self.source}


@ADVERSARIES.register("mixed")
class MixedAdversary(OnManifoldAdversary):
    """On-manifold (fraction ``ratio``) + off-manifold PGD (the rest) adversarial examples."""

    name = "mixed"

    def __init__(self, eps: float = 0.0, steps: int = TRAIN_STEPS, **kwargs: Any) -> None:
        super().__init__(eps, steps, **kwargs)
        if not self.eps > 0:
            raise ValueError("adversary 'mixed' needs a pixel eps > 0 for its PGD part")
        self._pgd = PGDAdversary(self.eps, self.steps)
        self._pgd.generator = self.generator  # one stream for both parts (checkpointed once)

    def rest(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._pgd.craft(model, x, y)
