"""`CompressConfig`: the frozen, self-validating recipe of one `robustedge compress` run."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

from robustedge.config import Optim, check_positive, enum_value, strict_from_dict
from robustedge.training.adversaries import ADVERSARIES


class Method(str, enum.Enum):
    PROX = "prox"
    MAGNITUDE = "magnitude"
    ADMM = "admm"
    HYDRA = "hydra"
    GMP = "gmp"


class Scope(str, enum.Enum):
    GLOBAL = "global"
    LAYER = "layer"
    ERK = "erk"  # per layer, Erdos-Renyi-Kernel budgets (unstructured only)


# Each method's defaults, as in its paper: prox distils (paper 1), HYDRA trains with TRADES.
DEFAULT_ADVERSARY = {Method.HYDRA: "trades"}
DEFAULT_KD_ALPHA = {Method.PROX: 0.5}
# prox penalties: l1 (soft threshold), reweighted (reweighted L1), l0 (top-k projection)
PENALTIES = ("reweighted", "l1", "l0")
# prox lam schedules: ball (fixed small lam + L0-ball on the ramp), track, feedback
LAM_SCHEDULES = ("ball", "track", "feedback")


@dataclass(frozen=True)
class CompressConfig:
    """Everything `robustedge compress` needs; the resolved copy is saved as config.yaml.

    ``adversary=None`` / ``kd_alpha=None`` resolve to the method's default (PGD, and TRADES
    for HYDRA; KD weight 0.5 for prox, 0 for the baselines). ``data=None`` takes the teacher's.

    The prox defaults (L0 top-k penalty, lazy prox, KD at T=1 from the teacher's answer on the
    clean image) and batch 16 are the setting that measured most robust at 90, 95 and 99 %
    sparsity (worst case of PGD-20x5 / APGD-CE / APGD-DLR, 3 seeds, LeNet-5 on digits;
    docs/compression-diagnosis.md sections 4 and 8). The paper-1 setting is ``penalty="reweighted",
    lazy_prox=False, kd_temp=4, kd_target="adv"``.
    """

    teacher: str
    method: Method = Method.PROX
    sparsity: float = 0.9
    structured: bool = False
    scope: Optional[Scope] = None  # None: per layer with structured, else global
    adversary: Optional[str] = None
    adversary_opts: Dict[str, Any] = field(default_factory=dict)
    eps: float = 0.1
    steps: int = 10
    trades_beta: float = 6.0
    kd_alpha: Optional[float] = None
    kd_temp: float = 1.0
    kd_target: str = "clean"  # KD (any method): teacher on the clean (robust soft labels) or adv
    epochs: int = 10
    finetune_epochs: int = 5
    batch_size: int = 16  # 64 left small-data students short of steps (README, issue 12)
    lr: float = 1e-3
    optimizer: Optim = Optim.ADAM
    lam0: Optional[float] = None
    penalty: str = "l0"
    lam_schedule: str = "ball"
    ramp_start: float = 0.0  # prox: share of the pruning phase trained dense first
    ramp_end: float = 0.75  # prox: share of the pruning phase at which the target is reached
    lazy_prox: bool = True  # prox: project a dense iterate (dual averaging); pruned can return
    prox_pull: float = 0.0  # lazy prox: L2 pull (rho) of the pruned part of the iterate to 0
    admm_warm: bool = False  # prox: ADMM's pull (admm_rho) during the dense warm start
    ema_decay: float = 0.0  # masked fine-tune: EMA of the weights (0: off); the average is kept
    awp_gamma: float = 0.0  # adversarial weight perturbation's relative size, both phases (0: off)
    admm_rho: float = 0.01
    score_lr: float = 0.01
    gmp_initial_sparsity: float = 0.0
    gmp_begin_step: int = 0
    gmp_end_step: Optional[int] = None  # None: the last step of the pruning phase
    gmp_frequency: int = 100
    gmp_power: float = 3.0
    include_first: bool = False
    include_last: bool = False
    model: Optional[str] = None
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    data: Optional[str] = None
    data_dir: Optional[str] = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        method = enum_value(Method, self.method, "method")
        object.__setattr__(self, "method", method)
        scope = self.scope or (Scope.LAYER if self.structured else Scope.GLOBAL)
        object.__setattr__(self, "scope", enum_value(Scope, scope, "scope"))
        object.__setattr__(self, "optimizer", enum_value(Optim, self.optimizer, "optimizer"))
        if self.adversary is None:
            object.__setattr__(self, "adversary", DEFAULT_ADVERSARY.get(method, "pgd"))
        if self.kd_alpha is None:
            object.__setattr__(self, "kd_alpha", DEFAULT_KD_ALPHA.get(method, 0.0))
        ADVERSARIES.get(self.adversary)
        if not (0.0 <= self.sparsity < 1.0):
            raise ValueError(f"sparsity must lie in [0, 1), got {self.sparsity}")
        if not (0.0 <= self.kd_alpha <= 1.0):
            raise ValueError(f"kd alpha must lie in [0, 1], got {self.kd_alpha}")
        check_positive(self, "epochs", "batch_size", "lr", "kd_temp", "admm_rho", "score_lr")
        if self.kd_target not in ("adv", "clean"):
            raise ValueError(f"kd_target must be 'adv' or 'clean', got '{self.kd_target}'")
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {', '.join(PENALTIES)}, got '{self.penalty}'")
        if self.lam_schedule not in LAM_SCHEDULES:
            raise ValueError(
                f"lam_schedule must be one of {', '.join(LAM_SCHEDULES)}, got '{self.lam_schedule}'"
            )
        if not (0.0 <= self.ramp_start < self.ramp_end <= 1.0):
            raise ValueError(
                f"need 0 <= ramp_start < ramp_end <= 1, got {self.ramp_start}, {self.ramp_end}"
            )
        if self.admm_warm and (self.ramp_start <= 0 or self.structured):
            raise ValueError("admm_warm needs ramp_start > 0 and unstructured pruning")
        if self.prox_pull < 0:
            raise ValueError(f"prox_pull must be >= 0 (0: off), got {self.prox_pull}")
        if not (0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must lie in [0, 1) (0: off), got {self.ema_decay}")
        if not (0.0 <= self.awp_gamma < 1.0):
            raise ValueError(f"awp_gamma must lie in [0, 1) (0: off), got {self.awp_gamma}")
        if self.awp_gamma > 0 and method is Method.HYDRA:
            raise ValueError("awp_gamma perturbs weights; hydra trains scores with frozen weights")
        if self.lam0 is not None and not (self.lam0 > 0):
            raise ValueError(f"lam0 must be > 0, got {self.lam0}")
        if self.finetune_epochs < 0 or self.steps < 0 or self.trades_beta < 0:
            raise ValueError("finetune_epochs, steps and trades_beta must be >= 0")
        if not (self.eps >= 0) or self.eps > 1:
            raise ValueError(f"eps must lie in [0, 1] (pixel units), got {self.eps}")
        if self.adversary != "none" and self.eps == 0:
            raise ValueError(f"adversary '{self.adversary}' needs eps > 0")
        if self.structured and method not in (Method.PROX, Method.MAGNITUDE):
            raise ValueError("--structured is implemented for --method prox and magnitude only")
        if not (0.0 <= self.gmp_initial_sparsity <= self.sparsity):
            raise ValueError(
                f"gmp initial sparsity must lie in [0, sparsity], got {self.gmp_initial_sparsity}"
            )
        if self.gmp_begin_step < 0 or self.gmp_frequency < 1 or not (self.gmp_power > 0):
            raise ValueError("gmp needs begin_step >= 0, frequency >= 1 and power > 0")
        if self.gmp_end_step is not None and self.gmp_end_step < self.gmp_begin_step:
            raise ValueError(
                f"gmp end_step ({self.gmp_end_step}) is before begin_step ({self.gmp_begin_step})"
            )
        if self.structured and self.scope is Scope.ERK:
            raise ValueError("--scope erk is for unstructured pruning only")
        if not self.teacher:
            raise ValueError("a teacher run folder is required")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for k in ("method", "scope", "optimizer"):
            d[k] = getattr(self, k).value
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> CompressConfig:
        return strict_from_dict(cls, d)
