"""APGD-CE / APGD-DLR (Croce & Hein 2020): schedule, DLR loss and attack properties.

The generic properties every registered pixel attack must have (eps bound, range, mode and
buffers restored, eps 0, seeded determinism) run for both APGD variants in
tests/test_attacks.py, which parametrizes over ``ATTACKS``; here are the APGD-specific ones.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from robustedge.attacks import ATTACKS, AttackSpec, build_attack
from robustedge.attacks.apgd import checkpoints, dlr_loss

EPS = 0.1


@pytest.fixture(scope="module")
def trained(trained_tiny):
    """(model, x, y): the shared tiny CNN (conftest) and 128 test samples."""
    model, x, y = trained_tiny
    return model, x[:128], y[:128]


def attack(model, name, eps=EPS, seed=0, steps=0, restarts=1, norm="linf", **params):
    spec = AttackSpec(name, eps, steps=steps, restarts=restarts, norm=norm, params=params)
    return build_attack(model, spec, generator=torch.Generator().manual_seed(seed))


def acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_registered():
    assert "apgd-ce" in ATTACKS.names() and "apgd-dlr" in ATTACKS.names()


def test_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), times N = 100
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    p, prev, want = 0.22, 0.0, []
    while p <= 1.0:
        want.append(round(p * 1000))
        p, prev = p + max(p - prev - 0.03, 0.06), p
    assert checkpoints(1000) == want
    assert checkpoints(1) == [1]
    assert all(c <= 10 for c in checkpoints(10)) and checkpoints(10)[0] == 2
    with pytest.raises(ValueError):
        checkpoints(0)


def test_dlr_loss_values_and_invariance():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 5.0]])
    y = torch.tensor([0, 1])
    # sample 0: correct, margin 3 - 1 = 2, z_pi1 - z_pi3 = 3 - 0 -> -2/3
    # sample 1: wrong, z_y - max_other = 2 - 5 = -3, z_pi1 - z_pi3 = 5 - 1 -> 3/4
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-2 / 3, 3 / 4]))
    # invariant to shifting and (positive) scaling of the logits
    assert torch.allclose(dlr_loss(7.0 * z + 3.0, y), dlr_loss(z, y), atol=1e-6)
    with pytest.raises(ValueError, match="3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.tensor([0, 1]))


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr"])
def test_bound_range_and_stronger_than_fgsm(trained, name):
    model, x, y = trained
    x_adv = attack(model, name, steps=50).perturb(x, y)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    x_fgsm = build_attack(model, AttackSpec("fgsm", EPS)).perturb(x, y)
    assert acc(model, x_adv, y) <= acc(model, x_fgsm, y)
    assert acc(model, x_adv, y) < acc(model, x, y)


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr"])
def test_deterministic_with_a_seed(trained, name):
    model, x, y = trained
    a = attack(model, name, seed=5, steps=20, restarts=2).perturb(x[:32], y[:32])
    b = attack(model, name, seed=5, steps=20, restarts=2).perturb(x[:32], y[:32])
    c = attack(model, name, seed=6, steps=20, restarts=2).perturb(x[:32], y[:32])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_unfooled_samples_end_at_a_higher_loss(trained):
    """Samples APGD-CE does not fool come back at their best point: a higher CE than clean."""
    model, x, y = trained
    x_adv = attack(model, "apgd-ce", eps=0.03, steps=30).perturb(x, y)
    with torch.no_grad():
        logits = model(x_adv)
        kept = logits.argmax(1) == y
        ce_adv = nn.functional.cross_entropy(logits, y, reduction="none")[kept]
        ce_clean = nn.functional.cross_entropy(model(x), y, reduction="none")[kept]
    assert int(kept.sum()) > 0
    assert bool((ce_adv >= ce_clean - 1e-6).all())
    assert float(ce_adv.mean()) > float(ce_clean.mean())


def test_restarts_never_weaken(trained):
    model, x, y = trained
    one = attack(model, "apgd-dlr", eps=0.05, steps=10, restarts=1).perturb(x, y)
    three = attack(model, "apgd-dlr", eps=0.05, steps=10, restarts=3).perturb(x, y)
    # the same seed makes restart 1 identical; later restarts only add fooled samples
    assert acc(model, three, y) <= acc(model, one, y)


def test_bad_settings_raise(trained):
    model, _, _ = trained
    with pytest.raises(ValueError, match="linf"):
        attack(model, "apgd-ce", norm="l2")
    with pytest.raises(ValueError):
        attack(model, "apgd-ce", momentum=0.0)
