"""Data an export needs: calibration inputs (train split) and the evaluation sets.

The transfer set is the test split attacked by PGD against the PyTorch model (steps and
restarts from :meth:`robustedge.attacks.AttackSpec.default`), so every exported format is
scored on the very same adversarial inputs. The attack stays an :class:`AttackSpec` until it is
written to export.json (:func:`attack_record`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np

from robustedge.errors import RobustEdgeError

if TYPE_CHECKING:  # torch loads only when an export runs
    from robustedge.attacks import AttackSpec

logger = logging.getLogger(__name__)

DEFAULT_CALIB_SAMPLES = 200  # ExportConfig.calib_samples' default


def transfer_attack(
    eps: float, steps: Optional[int] = None, restarts: Optional[int] = None
) -> AttackSpec:
    """The attack that crafts the transfer set: PGD-Linf with the evaluation defaults
    (:meth:`~robustedge.attacks.AttackSpec.default`) unless overridden."""
    from robustedge.attacks import AttackSpec

    return AttackSpec.default("pgd", eps, steps, restarts)


def attack_record(spec: AttackSpec) -> Dict[str, Any]:
    """How export.json and the eval sets record an attack (its settings, no params)."""
    return spec.record(with_params=False)


def pgd_inputs(model: Any, x: np.ndarray, y: np.ndarray, spec: AttackSpec, seed: int) -> np.ndarray:
    """Adversarial versions of ``x`` against ``model`` per ``spec``; float32 NCHW in [0, 1]."""
    import torch

    from robustedge.attacks import build_attack

    attack = build_attack(model, spec, generator=torch.Generator().manual_seed(seed))
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    out = [attack.perturb(xt[i : i + 256], yt[i : i + 256]).cpu() for i in range(0, len(xt), 256)]
    return torch.cat(out).numpy().astype(np.float32)


def calibration_inputs(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    n: int,
    adv_fraction: float,
    attack: AttackSpec,
    seed: int,
) -> np.ndarray:
    """``n`` training inputs (seeded draw), the first ``round(adv_fraction * n)`` replaced by
    their PGD versions. NCHW float32 in [0, 1]."""
    if n < 1:
        raise RobustEdgeError(f"--calib-samples must be >= 1, got {n}")
    if not 0.0 <= adv_fraction <= 1.0:
        raise RobustEdgeError(f"--calib-adv-fraction must lie in [0, 1], got {adv_fraction}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x_train))[: min(n, len(x_train))]
    x = x_train[idx].astype(np.float32)
    n_adv = int(round(adv_fraction * len(x)))
    if n_adv:
        x[:n_adv] = pgd_inputs(model, x[:n_adv], y_train[idx[:n_adv]], attack, seed)
    return x


@dataclass(frozen=True)
class Calibration:
    """How int8 formats are calibrated: ``samples`` training inputs, ``adv_fraction`` of them
    replaced by PGD versions; or the caller's own inputs ``x`` (N x C x H x W in [0, 1])."""

    samples: int
    adv_fraction: float
    x: Optional[np.ndarray] = None

    def inputs(self, ctx: Any, attack: AttackSpec, seed: int) -> Tuple[np.ndarray, Dict]:
        """(NCHW float32 calibration inputs, the note recorded in export.json)."""
        if self.x is not None:
            x = np.asarray(self.x, dtype=np.float32)
            source, adv = "caller-supplied inputs", None
        else:
            d = ctx.data
            x = calibration_inputs(
                ctx.model, d.x_train, d.y_train, self.samples, self.adv_fraction, attack, seed
            )
            source, adv = f"{d.name} train split (seeded draw)", self.adv_fraction
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(ctx.spec.input_shape):
            raise RobustEdgeError(
                f"calibration inputs must be N x {ctx.spec.input_shape}, got {tuple(x.shape)}"
            )
        note = {
            "samples": int(len(x)),
            "source": source,
            "adv_fraction": adv,
            "adv_attack": attack_record(attack) if adv else None,
            "layout_for_onnx2tf": "NHWC float32",
            "mean": 0.0,
            "std": 1.0,
            "range": [float(x.min()), float(x.max())],
        }
        return x, note


def save_eval_sets(
    folder: Path, x_test: np.ndarray, y_test: np.ndarray, x_adv: np.ndarray, spec: AttackSpec
) -> Dict[str, str]:
    """Write eval_clean.npz and eval_transfer.npz (x NCHW float32, y int64)."""
    clean, transfer = "eval_clean.npz", "eval_transfer.npz"
    attack = attack_record(spec)
    np.savez(folder / clean, x=x_test.astype(np.float32), y=y_test.astype(np.int64))
    meta = {k: np.asarray(v) for k, v in attack.items()}
    np.savez(
        folder / transfer,
        x=x_adv.astype(np.float32),
        y=y_test.astype(np.int64),
        attack=np.asarray(json.dumps(attack)),
        name=meta.pop("attack"),
        **meta,
    )
    return {"clean": clean, "transfer": transfer}


def load_eval_set(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    with np.load(path) as f:
        return f["x"], f["y"]
