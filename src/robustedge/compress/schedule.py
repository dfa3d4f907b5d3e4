"""Steering the regularisation weight lam towards a target sparsity.

The target follows the cubic ramp of Zhu & Gupta (2017): ``s(t) = s_T (1 - (1 - t/T)^3)`` over
the first ``ramp`` steps, then stays at ``s_T``. After every step the controller compares the
measured sparsity with ``s(t)`` and multiplies lam by ``gain`` (too dense) or divides it (too
sparse), within ``[lam_min, lam_max]``. The final exact projection then fixes any residue.
"""

from __future__ import annotations

from dataclasses import dataclass


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
