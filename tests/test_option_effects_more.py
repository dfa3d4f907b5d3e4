"""Effect tests for options that had a test setting them but none checking what they change
(entries of tests/option_effects.py). Config level: the CLI builds the same CompressConfig
(``CompressConfig.from_keys``), so the effect is checked on what the config drives."""

from __future__ import annotations

import pytest
import torch

from robustedge.compress import CompressConfig


def _sgd(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def test_lam0_is_the_first_prox_step_and_the_feedback_start():
    """compress --lam0 (ball schedule): the first prox step is lr * lam0, whatever the weights;
    without it, the step comes from the weights (here: different). Feedback schedule: the
    controller starts at lam0 (its first update from there, as a controller built by hand)."""
    from robustedge.compress.schedule import Lam, LamController

    u = {"a": torch.tensor([0.1, 0.2, 0.3, 0.4])}
    cfg = CompressConfig.from_keys(teacher="t", method="prox", sparsity=0.5, lam0=0.7)
    assert cfg.options.lam0 == 0.7
    assert Lam(cfg, ramp=10).next_step(u, 0.0, _sgd(0.5)) == pytest.approx(0.5 * 0.7)
    free = CompressConfig(teacher="t", method="prox", sparsity=0.5)
    assert Lam(free, ramp=10).next_step(u, 0.0, _sgd(0.5)) != pytest.approx(0.5 * 0.7)
    fb = CompressConfig.from_keys(
        teacher="t", method="prox", sparsity=0.5, lam0=0.7, lam_schedule="feedback"
    )
    lam = Lam(fb, ramp=10)
    lam.next_step(u, 0.0, _sgd(0.5))
    ref = LamController(0.5, 0.7, 10)
    ref.update(0.0)
    assert lam.lam == pytest.approx(ref.lam) and lam.lam > 0.7


@pytest.mark.parametrize("rate_init, want", [(0.8, 0.8), (0.3, 0.5)])
def test_harp_rate_init_is_every_layers_first_kept_fraction(rate_init, want):
    """compress --rate-init: every layer starts at kept fraction max(rate_init, 1 - sparsity)
    (0.8 kept as asked; 0.3 below the target's 0.5 is raised to it)."""
    from robustedge.compress.method_harp import HarpState

    cfg = CompressConfig.from_keys(teacher="t", method="harp", sparsity=0.5, rate_init=rate_init)
    state = HarpState([torch.randn(4, 3), torch.randn(6)], 0.5, cfg.options)
    assert torch.allclose(state.rates(), torch.full((2,), want), atol=1e-6)
    assert int(state.mask(0).sum()) == round(12 * want)
