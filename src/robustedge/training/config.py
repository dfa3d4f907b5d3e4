"""`TrainConfig`: the frozen, self-validating recipe of one `robustedge train` run.

Every field is a :func:`~robustedge.config.setting` with its one default and help text: the
``train`` command's options and the recipe's ``teacher.train`` keys are generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from robustedge.attacks import DEFAULT_EPS
from robustedge.config import ConfigMixin, Optim, check_positive, enum_value, setting
from robustedge.data import DATASETS
from robustedge.devices import DEVICES, check_device
from robustedge.models import MODELS
from robustedge.training.adversaries import ADVERSARIES, TRADES_BETA, TRAIN_STEPS

EPS_HELP = "Linf budget in [0, 1] pixel units."


@dataclass(frozen=True)
class TrainConfig(ConfigMixin):
    """Everything `robustedge train` needs; saved as config.yaml in the run folder."""

    data: str = setting("digits", help="Data set: {choices}.", choices=DATASETS.names)
    model: str = setting(
        "lenet5", help="Model: {choices}, or module.path:factory.", choices=MODELS.names
    )
    model_kwargs: Dict[str, Any] = setting(
        default_factory=dict,
        cli="--model-arg",
        help="Model factory argument (repeatable), e.g. width=2.",
    )
    adversary: str = setting(
        "pgd",
        help="Training adversary: {choices} (onmanifold and mixed need --manifold).",
        choices=ADVERSARIES.names,
    )
    eps: float = setting(DEFAULT_EPS, help=EPS_HELP)
    steps: int = setting(TRAIN_STEPS, help="PGD / TRADES steps of the training adversary.")
    trades_beta: float = setting(TRADES_BETA, help="TRADES' trade-off weight beta.")
    epochs: int = setting(60, help="Training epochs.")
    batch_size: int = setting(64, help="Global batch (split evenly over --nproc processes).")
    lr: float = setting(2e-3, help="Learning rate.")
    optimizer: Optim = setting(Optim.ADAM, help="Optimizer.")
    weight_decay: float = setting(0.0, help="Weight decay.")
    seed: int = setting(0, help="Random seed (weights, batches, attacks).")
    device: str = setting("auto", help="Where to train: {choices}.", choices=lambda: DEVICES)
    data_dir: Optional[str] = setting(
        None, help="Folder with local data files [default: $ROBUSTEDGE_DATA_DIR]."
    )
    manifold: Optional[str] = setting(
        None, help="VAE run folder or 'synthetic' (on-manifold adversaries)."
    )
    onmanifold_ratio: float = setting(
        0.5, help="Fraction of each batch made on-manifold adversarial (onmanifold / mixed)."
    )
    eta: Optional[float] = setting(
        None, help="On-manifold latent budget [default: the manifold's own]."
    )

    def __post_init__(self) -> None:
        DATASETS.get(self.data)
        if ":" not in self.model:
            MODELS.get(self.model)
        ADVERSARIES.get(self.adversary)
        object.__setattr__(self, "optimizer", enum_value(Optim, self.optimizer, "optimizer"))
        check_device(self.device)
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

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> TrainConfig:
        return super().from_dict(d)
