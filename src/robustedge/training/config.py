"""`TrainConfig`: the frozen, self-validating recipe of one `robustedge train` run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

from robustedge.config import Optim, check_positive, enum_value, strict_from_dict
from robustedge.data import DATASETS
from robustedge.models import MODELS
from robustedge.training.adversaries import ADVERSARIES


@dataclass(frozen=True)
class TrainConfig:
    """Everything `robustedge train` needs; saved as config.yaml in the run folder."""

    data: str = "digits"
    model: str = "lenet5"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    adversary: str = "pgd"
    eps: float = 0.1
    steps: int = 10
    trades_beta: float = 6.0
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: Optim = Optim.ADAM
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    data_dir: Optional[str] = None
    manifold: Optional[str] = None  # VAE run folder or "synthetic" (on-manifold adversaries)
    onmanifold_ratio: float = 0.5  # fraction of each batch made on-manifold adversarial
    eta: Optional[float] = None  # on-manifold latent budget (None: the manifold's default)

    def __post_init__(self) -> None:
        DATASETS.get(self.data)
        if ":" not in self.model:
            MODELS.get(self.model)
        ADVERSARIES.get(self.adversary)
        object.__setattr__(self, "optimizer", enum_value(Optim, self.optimizer, "optimizer"))
        check_positive(self, "epochs", "batch_size", "lr")
        if not (self.eps >= 0) or self.eps > 1:
            raise ValueError(f"eps must lie in [0, 1] (pixel units), got {self.eps}")
        if self.adversary != "none" and self.eps == 0:
            raise ValueError(f"adversary '{self.adversary}' needs eps > 0")
        if self.steps < 0 or self.weight_decay < 0 or self.trades_beta < 0:
            raise ValueError("steps, weight_decay and trades_beta must be >= 0")
        if not 0.0 <= self.onmanifold_ratio <= 1.0:
            raise ValueError(f"onmanifold_ratio must lie in [0, 1], got {self.onmanifold_ratio}")
        if self.eta is not None and not (self.eta >= 0):
            raise ValueError(f"eta must be >= 0 (latent units), got {self.eta}")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["optimizer"] = self.optimizer.value
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> TrainConfig:
        return strict_from_dict(cls, d)
