"""Steering the regularisation weight lam towards a target sparsity (prox's lam schedules).

The target follows the cubic ramp of Zhu & Gupta (2017): ``s(t) = s_T (1 - (1 - t/T)^3)`` over
the first ``ramp`` steps, then stays at ``s_T``. After every step the controller compares the
measured sparsity with ``s(t)`` and multiplies lam by ``gain`` (too dense) or divides it (too
sparse), within ``[lam_min, lam_max]``. The final exact projection then fixes any residue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional

import torch

if TYPE_CHECKING:
    from robustedge.compress.config import CompressConfig

OVERSHOOT = 0.01  # skip the prox step while sparsity exceeds the schedule by this much
# ball: default lam makes the total L1 shrink over the ramp this share of the target quantile
BALL_SHRINK = 0.25


def cubic_ramp(step: int, ramp: int, target: float) -> float:
    """Sparsity the schedule asks for after ``step`` of ``ramp`` steps."""
    if ramp <= 0:
        return target
    t = min(step / ramp, 1.0)
    return target * (1.0 - (1.0 - t) ** 3)


@dataclass
class LamController:
    """Multiplicative feedback on lam; call :meth:`update` with the current sparsity."""

    target: float
    lam: float
    ramp: int
    gain: float = 1.05
    lam_min: float = 1e-6
    lam_max: float = 1e3
    step: int = 0

    def wanted(self) -> float:
        return cubic_ramp(self.step, self.ramp, self.target)

    def update(self, sparsity: float) -> float:
        """Advance one step and return the new lam."""
        self.step += 1
        if sparsity < self.wanted():
            self.lam = min(self.lam * self.gain, self.lam_max)
        else:
            self.lam = max(self.lam / self.gain, self.lam_min)
        return self.lam


def polynomial_sparsity(
    step: int,
    initial: float,
    final: float,
    begin_step: int,
    end_step: int,
    power: float = 3.0,
) -> float:
    """TF-MOT's ``PolynomialDecay`` sparsity at ``step`` (Zhu & Gupta 2017's schedule):
    ``final + (initial - final) * (1 - p)^power`` with ``p = clip((step - begin) / (end -
    begin), 0, 1)``; ``initial`` before ``begin_step``, ``final`` from ``end_step`` on."""
    if end_step <= begin_step:
        return final if step >= begin_step else initial
    p = min(1.0, max(0.0, (step - begin_step) / (end_step - begin_step)))
    return final + (initial - final) * (1.0 - p) ** power


def should_prune(step: int, begin_step: int, end_step: int, frequency: int) -> bool:
    """TF-MOT's pruning turn: inside ``[begin_step, end_step]`` (``end_step = -1``: no end)
    and ``(step - begin_step) % frequency == 0``."""
    in_range = step >= begin_step and (end_step == -1 or step <= end_step)
    return in_range and (step - begin_step) % frequency == 0


class Lam:
    """The lam schedule. ``ball`` (default): lam fixed, ``lam0`` or such that the total shrink
    over the ramp is ``BALL_SHRINK`` times the target quantile of ``u`` (the caller adds the
    top-k projection onto ``s(t)``). ``track``: each step, lam is set from the current weights
    so that the prox zeroes exactly the ramp's sparsity ``s(t)`` (per layer with scope=layer).
    ``feedback``: :class:`LamController` from ``lam0`` (multiplicative steering)."""

    def __init__(self, cfg: CompressConfig, ramp: int) -> None:
        self.cfg, self.ramp, self.t, self.lam = cfg, ramp, 0, 0.0
        self.opts = cfg.options
        self.ctl: Optional[LamController] = None

    def state(self, clock: Dict[str, int]) -> Dict[str, object]:
        """Plain values for a checkpoint (with the caller's step ``clock``)."""
        ctl = dict(vars(self.ctl)) if self.ctl is not None else None
        return {"t": self.t, "lam": self.lam, "ctl": ctl, "clock": clock["t"]}

    def load(self, state: Dict[str, object], clock: Dict[str, int]) -> None:
        self.t, self.lam, clock["t"] = int(state["t"]), float(state["lam"]), int(state["clock"])
        self.ctl = LamController(**state["ctl"]) if state["ctl"] is not None else None

    def next_step(self, u: Dict[str, torch.Tensor], sparsity: float, optimizer):
        """Prox step ``lr * lam`` (a float, or one per layer), or None to skip this step."""
        lr = optimizer.param_groups[0]["lr"]
        self.t += 1
        if self.opts.lam_schedule == "ball":
            if self.t == 1:
                q = kth_value(torch.cat([v.flatten() for v in u.values()]), self.cfg.sparsity)
                self.lam = self.opts.lam0 or BALL_SHRINK * q / (lr * self.ramp)
            return lr * self.lam
        if self.opts.lam_schedule == "feedback":
            if self.ctl is None:  # lam0 given, or: a constant shrink reaching the target's
                # quantile of u by the end of the ramp (gradients aside)
                lam0 = self.opts.lam0
                if lam0 is None:
                    q = kth_value(torch.cat([v.flatten() for v in u.values()]), self.cfg.sparsity)
                    lam0 = max(q / (lr * self.ramp), 1e-6)
                self.ctl = LamController(self.cfg.sparsity, lam0, self.ramp)
            self.ctl.update(sparsity)
            self.lam = self.ctl.lam
            return None if sparsity > self.ctl.wanted() + OVERSHOOT else lr * self.lam
        wanted = cubic_ramp(self.t, self.ramp, self.cfg.sparsity)
        if self.cfg.scope.value == "layer":
            steps = {n: kth_value(v.flatten(), wanted) for n, v in u.items()}
            self.lam = max(steps.values()) / lr
            return steps
        step = kth_value(torch.cat([v.flatten() for v in u.values()]), wanted)
        self.lam = step / lr
        return step


def kth_value(t: torch.Tensor, q: float) -> float:
    """The value at quantile ``q`` (0 when q selects nothing)."""
    k = int(round(q * t.numel()))
    return float(t.float().kthvalue(k).values) if k >= 1 else 0.0
