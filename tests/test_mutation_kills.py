"""Exact-value unit tests of the core modules, written to kill mutmut's mutants (issue 16).

Each test checks a promised value (a hand computation, a boundary, an error message) rather
than a range, so that a changed operator, constant or condition in the module fails it.
Fast (no training): `scripts/mutation.sh` runs them once per mutant. docs/testing.md lists
the surviving mutants judged harmless.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
import torch.nn as nn

from robustedge.attacks import ATTACKS, AttackSpec, build_attack, predict
from robustedge.attacks.base import (
    DEFAULT_EPS,
    DEFAULT_RESTARTS,
    DEFAULT_STEPS,
    Attack,
    eps_or_default,
    model_device,
)
from robustedge.attacks.fgsm import FGSM
from robustedge.attacks.pgd import PGD

# ---------------------------------------------------------------------- attack models


class SumModel(nn.Module):
    """Logits ``(0, sum(x) - b)``: label 0 has input gradient ``sigmoid(z) > 0`` everywhere
    (every signed step goes up); label 1 the opposite. Records every input it sees."""

    def __init__(self, b: float = 0.0) -> None:
        super().__init__()
        self.b = b
        self.seen: List[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        z = x.flatten(1).sum(1, keepdim=True) - self.b
        return torch.cat([torch.zeros_like(z), z], 1)


def half(n: int = 3) -> torch.Tensor:
    return torch.full((n, 1, 4, 4), 0.5)


# ------------------------------------------------------------------------ attacks/base


def test_defaults_are_the_documented_ones():
    assert DEFAULT_EPS == 0.1
    assert DEFAULT_STEPS == {"fgsm": 0, "pgd": 20, "square": 1000}
    assert DEFAULT_RESTARTS == {"fgsm": 1, "pgd": 5, "square": 1}


@pytest.mark.parametrize("eps,want", [(None, 0.1), (0, 0.1), (0.0, 0.1), (-1, 0.1), (0.3, 0.3)])
def test_eps_or_default(eps, want):
    got = eps_or_default(eps)
    assert got == want and type(got) is float


def test_eps_or_default_int_becomes_float():
    assert eps_or_default(1) == 1.0 and type(eps_or_default(1)) is float


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"eps": -0.1}, "eps must be >= 0, got -0.1"),
        ({"eps": float("nan")}, "eps must be >= 0, got nan"),
        ({"eps": 0.1, "steps": -1}, r"steps must be >= 0 and restarts >= 1 \(-1, 1\)"),
        ({"eps": 0.1, "restarts": 0}, r"steps must be >= 0 and restarts >= 1 \(0, 0\)"),
        ({"eps": 0.1, "norm": "l1"}, "norm must be 'linf' or 'l2', got 'l1'"),
    ],
)
def test_attack_spec_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        AttackSpec("pgd", **kw)


def test_attack_spec_accepts_boundaries():
    s = AttackSpec("pgd", 0.0, steps=0, restarts=1, norm="l2")
    assert (s.eps, s.steps, s.restarts, s.norm, s.params) == (0.0, 0, 1, "l2", {})
    assert AttackSpec("fgsm", 0.1).norm == "linf" and AttackSpec("fgsm", 0.1).steps == 0


def test_attack_spec_default():
    assert AttackSpec.default("pgd") == AttackSpec("pgd", 0.1, steps=20, restarts=5)
    assert AttackSpec.default("square", 0.2) == AttackSpec("square", 0.2, 1000, 1)
    assert AttackSpec.default("fgsm", steps=7, restarts=3) == AttackSpec("fgsm", 0.1, 0, 3)
    assert AttackSpec.default("fgsm") == AttackSpec("fgsm", 0.1, 0, 1)
    got = AttackSpec.default("pgd", 0.3, steps=3, restarts=2, alpha=0.01)
    assert got == AttackSpec("pgd", 0.3, 3, 2, params={"alpha": 0.01})
    assert AttackSpec.default("apgd-ce") == AttackSpec("apgd-ce", 0.1, 0, 1)


def test_attack_spec_dicts_and_label():
    s = AttackSpec("pgd", 0.1, steps=20, restarts=5, params={"alpha": 0.02})
    d = s.to_dict()
    assert d == {
        "name": "pgd",
        "eps": 0.1,
        "steps": 20,
        "restarts": 5,
        "norm": "linf",
        "params": {"alpha": 0.02},
    }
    assert AttackSpec.from_dict(d) == s
    row = {"attack": "fgsm", "name": "other", "eps": "0.2", "acc": 0.5}
    got = AttackSpec.from_dict(row)
    assert got == AttackSpec("fgsm", 0.2) and type(got.eps) is float
    got = AttackSpec.from_dict({"name": "pgd", "eps": 1, "steps": "3", "restarts": "2"})
    assert (got.steps, got.restarts, got.norm, got.params) == (3, 2, "linf", {})
    got = AttackSpec.from_dict({"name": "pgd", "eps": 0.5, "norm": "l2", "params": {"a": 1}})
    assert got.norm == "l2" and got.params == {"a": 1}
    assert s.label() == "pgd-linf eps=0.1 steps=20 restarts=5"
    assert AttackSpec("fgsm", 0.1).label() == "fgsm-linf eps=0.1"
    assert AttackSpec("pgd", 0.5, steps=3, norm="l2").label() == "pgd-l2 eps=0.5 steps=3"
    assert AttackSpec("square", 0.05, restarts=2).label() == "square-linf eps=0.05 restarts=2"


def test_attack_base_checks_and_stores():
    m = SumModel()
    with pytest.raises(ValueError, match="eps must be >= 0, got -1"):
        FGSM(m, -1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        FGSM(m, float("nan"))
    g = torch.Generator()
    a = FGSM(m, 0, bounds=(0.2, 0.6), generator=g)
    assert (a.eps, a.lo, a.hi, a.generator, a.model) == (0.0, 0.2, 0.6, g, m)
    assert type(FGSM(m, 1).eps) is float
    b = FGSM(m, 0.1)
    assert (b.lo, b.hi, b.generator) == (0.0, 1.0, None)
    with pytest.raises(NotImplementedError):
        Attack(m, 0.1).perturb(half(), torch.zeros(3, dtype=torch.long))


def test_eps_zero_returns_a_copy_without_querying():
    m, x = SumModel(), half()
    out = FGSM(m, 0.0).perturb(x, torch.zeros(3, dtype=torch.long))
    assert torch.equal(out, x) and out is not x and m.seen == []
    out[0] = 9.0
    assert float(x.max()) == 0.5


def test_perturb_projects_onto_ball_and_bounds():
    m, x = SumModel(), half()
    up, down = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    assert torch.allclose(FGSM(m, 0.3).perturb(x, up), torch.full_like(x, 0.8))
    assert torch.allclose(FGSM(m, 0.3).perturb(x, down), torch.full_like(x, 0.2))
    assert torch.allclose(FGSM(m, 0.3, bounds=(0.3, 0.6)).perturb(x, up), torch.full_like(x, 0.6))
    got = FGSM(m, 0.3, bounds=(0.3, 0.6)).perturb(x, down)
    assert torch.allclose(got, torch.full_like(x, 0.3))
    a = FGSM(m, 0.1)
    far = x + torch.linspace(-0.5, 0.5, 16).view(1, 1, 4, 4)
    want = x + torch.clamp(far - x, -0.1, 0.1)
    assert torch.allclose(a.project(far, x), want)
    assert torch.allclose(FGSM(m, 1.0).project(x + 0.7, x), torch.ones_like(x))
    assert torch.allclose(FGSM(m, 1.0).project(x - 0.7, x), torch.zeros_like(x))


def test_perturb_restores_train_mode_and_uses_eval():
    class ModeSpy(SumModel):
        def forward(self, x):
            self.modes = getattr(self, "modes", []) + [self.training]
            return super().forward(x)

    m = ModeSpy()
    m.train()
    FGSM(m, 0.1).perturb(half(), torch.zeros(3, dtype=torch.long))
    assert m.training is True and m.modes == [False]
    m.eval()
    FGSM(m, 0.1).perturb(half(), torch.zeros(3, dtype=torch.long))
    assert m.training is False


def test_loss_grad_is_per_sample_cross_entropy():
    m = nn.Linear(4, 3)
    torch.manual_seed(0)
    x, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
    loss, grad = FGSM(m, 0.1).loss_grad(x, y)
    xr = x.clone().requires_grad_(True)
    ref = nn.functional.cross_entropy(m(xr), y, reduction="none")
    (g,) = torch.autograd.grad(ref.sum(), xr)
    assert loss.shape == (5,) and torch.allclose(loss, ref.detach())
    assert torch.allclose(grad, g) and not loss.requires_grad and not grad.requires_grad
    assert x.grad is None and not x.requires_grad


def test_model_device_and_predict():
    assert model_device(nn.ReLU()) == torch.device("cpu")
    lin = nn.Linear(3, 2)
    assert model_device(lin) == lin.weight.device
    torch.manual_seed(0)
    x = torch.rand(7, 3)
    want = lin(x).argmax(1)
    lin.train()
    for bs in (1, 2, 3, 7, 512):
        got = predict(lin, x, batch_size=bs)
        assert torch.equal(got, want) and got.dtype == torch.long
    assert lin.training is True

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.sizes = []

        def forward(self, t):
            self.sizes.append((len(t), self.training))
            return torch.zeros(len(t), 2)

    spy = Spy()
    predict(spy, torch.zeros(5, 1), batch_size=2)
    assert spy.sizes == [(2, False), (2, False), (1, False)]
    predict(spy, torch.zeros(3, 1))
    assert spy.sizes[-1] == (3, False) and spy.training is True


def test_build_attack_from_registry():
    m = SumModel()
    a = build_attack(m, AttackSpec("pgd", 0.2, steps=7, restarts=2, params={"alpha": 0.01}))
    assert isinstance(a, PGD) and (a.eps, a.steps, a.restarts, a.alpha) == (0.2, 7, 2, 0.01)
    f = build_attack(m, AttackSpec("fgsm", 0.3), bounds=(0.1, 0.9))
    assert isinstance(f, FGSM) and (f.eps, f.lo, f.hi) == (0.3, 0.1, 0.9)
    assert ATTACKS.get("fgsm") is FGSM and FGSM.name == "fgsm" and PGD.name == "pgd"


# ---------------------------------------------------------------------------------- fgsm


def test_fgsm_is_one_signed_step_of_eps():
    m, x = SumModel(), half()
    y = torch.tensor([0, 1, 0])
    out = FGSM(m, 0.2).perturb(x, y)
    want = torch.stack([x[0] + 0.2, x[1] - 0.2, x[2] + 0.2])
    assert torch.allclose(out, want)
    assert len(m.seen) == 1 and torch.equal(m.seen[0], x)


# ----------------------------------------------------------------------------------- pgd


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"steps": 0}, "PGD needs steps >= 1 and restarts >= 1, got 0, 1"),
        ({"restarts": 0}, "PGD needs steps >= 1 and restarts >= 1, got 20, 0"),
        ({"norm": "l1"}, "norm must be 'linf' or 'l2', got 'l1'"),
    ],
)
def test_pgd_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PGD(SumModel(), 0.1, **kw)


def test_pgd_settings_and_from_spec():
    m = SumModel()
    p = PGD(m, 0.1, steps=1, restarts=1)
    assert (p.steps, p.restarts, p.norm, p.random_start) == (1, 1, "linf", True)
    assert p.alpha == pytest.approx(0.25)
    p = PGD(m, 0.1)
    assert p.steps == 20 and p.restarts == 1 and p.alpha == pytest.approx(0.0125)
    assert PGD(m, 0.1, alpha=0.5).alpha == 0.5 and PGD(m, 0.1, alpha=0.0).alpha == 0.0
    p = PGD.from_spec(m, AttackSpec("pgd", 0.2, steps=0))
    assert (p.steps, p.restarts, p.norm, p.eps) == (20, 1, "linf", 0.2)
    p = PGD.from_spec(
        m, AttackSpec("pgd", 0.5, steps=3, restarts=4, norm="l2", params={"alpha": 0.1})
    )
    assert (p.steps, p.restarts, p.norm, p.alpha) == (3, 4, "l2", 0.1)
    p = PGD.from_spec(m, AttackSpec("pgd", 0.5, params={"alpha": 0.1}), alpha=0.2)
    assert p.alpha == 0.2
    g = torch.Generator()
    p = PGD.from_spec(m, AttackSpec("pgd", 0.1), generator=g, random_start=False)
    assert p.generator is g and p.random_start is False


def test_pgd_restarts_keep_first_fooling_else_highest_loss():
    """Per sample: the first restart that fools the model, else the one with the highest
    loss (hand-replayed from the documented uniform start and one signed step)."""
    eps, alpha, restarts, b = 0.1, 0.01, 4, 8.3
    x = half(12)
    y = torch.zeros(12, dtype=torch.long)
    m = SumModel(b)
    out = PGD(
        m, eps, steps=1, alpha=alpha, restarts=restarts, generator=torch.Generator().manual_seed(1)
    ).perturb(x, y)
    gen = torch.Generator().manual_seed(1)
    runs, losses, fooled = [], [], []
    for _ in range(restarts):
        u = torch.rand(x.shape, generator=gen)
        start = torch.clamp(x + (2 * u - 1) * eps, 0, 1)
        x1 = torch.clamp(x + torch.clamp(start - x + alpha, -eps, eps), 0, 1)
        z = x1.flatten(1).sum(1) - b
        runs.append(x1)
        losses.append(nn.functional.softplus(z))
        fooled.append(z > 0)
    chosen = []
    for i in range(len(x)):
        first = next((r for r in range(restarts) if fooled[r][i]), None)
        if first is None:
            first = max(range(restarts), key=lambda r: (float(losses[r][i]), -r))
        chosen.append(first)
        assert torch.allclose(out[i], runs[first][i], atol=1e-6), (i, first)
    assert any(c > 0 for c in chosen) and any(fooled[r][i] for r in range(restarts) for i in [0])
    n_fooled = sum(any(bool(fooled[r][i]) for r in range(restarts)) for i in range(len(x)))
    assert 0 < n_fooled < len(x), n_fooled  # both rules are exercised


def test_pgd_stops_restarting_when_all_fooled():
    m = SumModel(-100.0)  # everything is fooled from the start
    PGD(m, 0.1, steps=2, restarts=5, random_start=False).perturb(half(), torch.zeros(3).long())
    assert len(m.seen) == 3  # 2 gradient queries + 1 scoring forward: one restart only


@pytest.mark.parametrize("shape", [(4, 1, 4, 4), (6, 1, 1, 1)])  # ||g|| above and below 1
def test_pgd_l2_random_start(shape):
    eps = 0.5
    m, x = SumModel(), torch.full(shape, 0.5)
    PGD(m, eps, steps=1, norm="l2", generator=torch.Generator().manual_seed(3)).perturb(
        x, torch.zeros(len(x), dtype=torch.long)
    )
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(x.shape, generator=gen)
    g = torch.randn(x.shape, generator=gen)
    g = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    delta = g * u.flatten(1)[:, :1].view(-1, 1, 1, 1) * eps
    assert torch.allclose(m.seen[0], torch.clamp(x + delta, 0, 1), atol=1e-6)
    assert float((m.seen[0] - x).flatten(1).norm(dim=1).max()) <= eps + 1e-6


def test_pgd_l2_step_direction_and_projection():
    eps = 0.3
    m, x = SumModel(), half(2)
    y = torch.tensor([0, 1])
    out = PGD(m, eps, steps=2, alpha=0.1, norm="l2", random_start=False).perturb(x, y)
    # gradient is +c (label 0) / -c (label 1) in all 16 pixels: unit step = +-1/4 per pixel
    assert torch.allclose(m.seen[1][0], x[0] + 0.1 / 4, atol=1e-6)
    assert torch.allclose(m.seen[1][1], x[1] - 0.1 / 4, atol=1e-6)
    assert torch.allclose(out[0], x[0] + 0.2 / 4, atol=1e-6)
    far = PGD(m, eps, norm="l2").project(x + 0.5, x)  # ||delta|| = 2 -> scaled to 0.3
    assert torch.allclose(far, x + 0.3 / 4, atol=1e-6)
    near = PGD(m, eps, norm="l2").project(x + 0.01, x)  # inside the ball: unchanged
    assert torch.allclose(near, x + 0.01, atol=1e-7)
    clipped = PGD(m, 10.0, norm="l2").project(x + 0.7, x)
    assert torch.allclose(clipped, torch.ones_like(x))
    low = PGD(m, 10.0, norm="l2", bounds=(0.4, 0.45)).project(x - 0.7, x)
    assert torch.allclose(low, torch.full_like(x, 0.4))


def test_pgd_zero_gradient_l2_is_finite():
    class Flat(nn.Module):  # the input gradient is exactly zero
        def forward(self, t):
            z = (t * 0).flatten(1).sum(1, keepdim=True)
            return torch.cat([z, z], 1)

    out = PGD(Flat(), 0.3, steps=2, norm="l2", random_start=False).perturb(
        half(2), torch.zeros(2).long()
    )
    assert torch.equal(out, half(2))
    out = PGD(Flat(), 0.3, steps=2, random_start=False).perturb(half(2), torch.zeros(2).long())
    assert torch.equal(out, half(2))


class FirstHalf(nn.Module):
    """Logits ``(0, sum of the first 8 pixels)``: the other 8 pixels have zero gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)[:, :8].sum(1, keepdim=True)
        return torch.cat([torch.zeros_like(z), z], 1)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_pixels_without_gradient_do_not_move(name):
    x, y = half(2), torch.zeros(2, dtype=torch.long)
    spec = AttackSpec(name, 0.1, steps=3, params={"random_start": False} if name == "pgd" else {})
    out = build_attack(FirstHalf(), spec).perturb(x, y)
    assert torch.allclose(out.flatten(1)[:, :8], torch.full((2, 8), 0.6))
    assert torch.equal(out.flatten(1)[:, 8:], torch.full((2, 8), 0.5))


# ---------------------------------------------------------------------- compress/prox


def test_prox_operators_exact():
    from robustedge.compress.prox import (
        group_norms,
        group_scale,
        group_soft_threshold,
        project_topk,
        reweighted_steps,
        soft_threshold,
        weighted_soft_threshold,
    )

    with pytest.raises(ValueError, match="prox step must be >= 0, got -0.1"):
        soft_threshold(torch.ones(2), -0.1)
    assert torch.equal(soft_threshold(torch.tensor([1.0, -1.0]), 0.0), torch.tensor([1.0, -1.0]))
    w = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1.2, 0.0, -1.6]])
    assert torch.allclose(group_norms(w), torch.tensor([5.0, 0.0, 2.0]))
    assert group_norms(torch.ones(2, 3, 2, 2)).shape == (2,)
    assert torch.allclose(
        group_scale(torch.tensor([5.0, 0.0, 2.0]), 1.0), torch.tensor([0.8, 0, 0.5])
    )
    assert torch.allclose(group_scale(torch.tensor([5.0, 2.0]), 2.5), torch.tensor([0.5, 0.0]))
    assert torch.allclose(group_scale(torch.tensor([2.0]), 0.0), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="prox step must be >= 0, got -1"):
        group_scale(torch.ones(1), -1)
    small = group_scale(torch.tensor([0.5, 0.0, 0.25]), 0.1)  # norms below 1
    assert torch.allclose(small, torch.tensor([0.8, 0.0, 0.6]))
    assert torch.equal(group_scale(torch.tensor([0.0, 2.0]), 0.0), torch.tensor([0.0, 1.0]))
    out = group_soft_threshold(w, 1.0)
    assert torch.allclose(out, torch.tensor([[2.4, 3.2, 0.0], [0, 0, 0], [0.6, 0.0, -0.8]]))
    w4 = torch.ones(2, 1, 2, 2)
    w4[1] *= 0.1  # norm 0.2 < 1: zeroed
    assert torch.allclose(group_soft_threshold(w4, 1.0)[0], torch.full((1, 2, 2), 0.5))
    assert torch.equal(group_soft_threshold(w4, 1.0)[1], torch.zeros(1, 2, 2))
    steps = torch.tensor([0.5, 2.0, 0.1])
    got = weighted_soft_threshold(torch.tensor([1.0, -1.0, -0.3]), steps)
    assert torch.allclose(got, torch.tensor([0.5, 0.0, -0.2]))
    r = reweighted_steps(torch.tensor([1.0, -2.0, 3.0]), 0.5)  # s = 2: 0.5*4/(|w|+0.2)
    assert torch.allclose(r, torch.tensor([2 / 1.2, 2 / 2.2, 2 / 3.2]))
    r = reweighted_steps(torch.tensor([1.0, -2.0, 3.0]), 0.5, rel_eps=0.5)
    assert torch.allclose(r, torch.tensor([2 / 2.0, 2 / 3.0, 2 / 4.0]))
    r = reweighted_steps(torch.tensor([0.1, -0.2, 0.3]), 0.5)  # s = 0.2 < 1
    assert torch.allclose(r, 0.5 * 0.04 / torch.tensor([0.12, 0.22, 0.32]))
    zero = reweighted_steps(torch.zeros(3), 1.0)
    assert torch.isfinite(zero).all()
    weights = {"a": torch.tensor([0.1, -0.5, 0.3]), "b": torch.tensor([[-0.2, 0.05]])}
    got = project_topk(weights, 0.6)  # 5 weights, zero 3: keep -0.5 and 0.3
    assert torch.equal(got["a"], torch.tensor([0.0, -0.5, 0.3]))
    assert torch.equal(got["b"], torch.tensor([[0.0, 0.0]]))
    got = project_topk(weights, 0.5, scope="layer")  # a: zero 2 (round 1.5); b: zero 1
    assert torch.equal(got["a"], torch.tensor([0.0, -0.5, 0.0]))
    assert torch.equal(got["b"], torch.tensor([[-0.2, 0.0]]))


@pytest.mark.parametrize(
    "numel,s,keep", [(10, 0.0, 10), (10, 0.25, 8), (10, 0.35, 6), (7, 0.5, 3), (4, 0.99, 0)]
)
def test_keep_count(numel, s, keep):
    from robustedge.compress.prox import keep_count

    assert keep_count(numel, s) == keep


@pytest.mark.parametrize("s", [1.0, -0.01, float("nan")])
def test_keep_count_rejects(s):
    from robustedge.compress.prox import keep_count

    with pytest.raises(ValueError, match=r"sparsity must lie in \[0, 1\), got"):
        keep_count(10, s)


def test_topk_masks_exact():
    from robustedge.compress.prox import erk_keep_counts, topk_mask, topk_masks

    s = torch.tensor([[0.3, 0.9], [0.1, 0.5]])
    assert torch.equal(topk_mask(s, 0), torch.zeros(2, 2, dtype=torch.bool))
    assert torch.equal(topk_mask(s, 2), torch.tensor([[False, True], [False, True]]))
    assert torch.equal(topk_mask(s, 4), torch.ones(2, 2, dtype=torch.bool))
    assert topk_mask(s, 1).dtype == torch.bool and topk_mask(s, 1).shape == (2, 2)
    scores = {"a": torch.tensor([5.0, 1.0, 2.0]), "b": torch.tensor([4.0, 3.0, 0.5, 0.2])}
    g = topk_masks(scores, 0.5)  # 7 entries: zero round(3.5)=4, keep 5, 4, 3
    assert g["a"].tolist() == [True, False, False] and g["b"].tolist() == [True, True, False, False]
    assert topk_masks(scores, 0.5, "global")["a"].tolist() == g["a"].tolist()
    lay = topk_masks(scores, 0.5, "layer")  # a: zero 2; b: zero 2
    assert lay["a"].tolist() == [True, False, False]
    assert lay["b"].tolist() == [True, True, False, False]
    lay = topk_masks(scores, 0.34, "layer")  # a: zero 1; b: zero 1
    assert lay["a"].tolist() == [True, False, True]
    assert lay["b"].tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="scope must be 'global', 'layer' or 'erk', got 'x'"):
        topk_masks(scores, 0.5, "x")
    assert erk_keep_counts({"a": (4, 4), "b": (6, 1)}, 0.5) == {"a": 6, "b": 5}
    assert erk_keep_counts({"a": (10, 10), "b": (2, 2)}, 0.5) == {"a": 48, "b": 4}
    # largest remainders get the leftover weights (sum 23 = 46 - round(23))
    shapes = {"t0": (3, 1), "t1": (16,), "t2": (4, 6), "t3": (3,)}
    assert erk_keep_counts(shapes, 0.5) == {"t0": 3, "t1": 11, "t2": 7, "t3": 2}
    assert erk_keep_counts({"t0": (8, 3, 4, 2), "t1": (3, 4)}, 0.0) == {"t0": 192, "t1": 12}
    # tensors turn dense over several rounds (and stay dense)
    shapes = {"t0": (16,), "t1": (1, 2), "t2": (8,), "t3": (3, 4)}
    assert erk_keep_counts(shapes, 0.1) == {"t0": 16, "t1": 2, "t2": 8, "t3": 8}
    shapes = {"t0": (4,), "t1": (16, 1, 1, 4), "t2": (2, 3, 2, 6)}
    assert erk_keep_counts(shapes, 0.5) == {"t0": 4, "t1": 41, "t2": 25}
    erk = topk_masks({"a": torch.rand(4, 4), "b": torch.rand(6, 1)}, 0.5, "erk")
    assert int(erk["a"].sum()) == 6 and int(erk["b"].sum()) == 5


# ----------------------------------------------------------------------- compress/schedule


def test_cubic_ramp_exact():
    from robustedge.compress.schedule import cubic_ramp

    assert cubic_ramp(0, 10, 0.8) == 0.0
    assert cubic_ramp(5, 10, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic_ramp(1, 10, 0.8) == pytest.approx(0.8 * (1 - 0.9**3))
    assert cubic_ramp(10, 10, 0.8) == pytest.approx(0.8)
    assert cubic_ramp(25, 10, 0.8) == pytest.approx(0.8)
    assert cubic_ramp(0, 1, 0.8) == 0.0 and cubic_ramp(1, 1, 0.8) == pytest.approx(0.8)
    assert cubic_ramp(0, 0, 0.7) == 0.7 and cubic_ramp(3, -1, 0.7) == 0.7


def test_lam_controller_exact():
    from robustedge.compress.schedule import LamController, cubic_ramp

    c = LamController(target=0.8, lam=1.0, ramp=10)
    assert (c.gain, c.lam_min, c.lam_max, c.step) == (1.05, 1e-6, 1e3, 0)
    assert c.wanted() == 0.0
    assert c.update(0.0) == pytest.approx(1.05) and c.step == 1
    assert c.wanted() == pytest.approx(cubic_ramp(1, 10, 0.8))
    assert c.update(0.9) == pytest.approx(1.0) and c.step == 2
    c.lam = 2.0
    assert c.update(c.wanted() if False else cubic_ramp(3, 10, 0.8)) == pytest.approx(2 / 1.05)
    hi = LamController(target=0.5, lam=999.0, ramp=1)
    assert hi.update(0.0) == 1e3 and hi.update(0.0) == 1e3
    lo = LamController(target=0.5, lam=1.5e-6, ramp=1, gain=2.0)
    assert lo.update(0.9) == 1e-6 and lo.update(0.9) == 1e-6
    g = LamController(target=0.5, lam=1.0, ramp=4, gain=2.0)
    assert g.update(0.0) == 2.0 and g.update(1.0) == 1.0


def test_polynomial_sparsity_and_turns_exact():
    from robustedge.compress.schedule import polynomial_sparsity, should_prune

    assert polynomial_sparsity(0, 0.1, 0.9, 2, 12) == pytest.approx(0.1)
    assert polynomial_sparsity(2, 0.1, 0.9, 2, 12) == pytest.approx(0.1)
    assert polynomial_sparsity(7, 0.1, 0.9, 2, 12) == pytest.approx(0.9 - 0.8 * 0.5**3)
    assert polynomial_sparsity(7, 0.1, 0.9, 2, 12, power=2) == pytest.approx(0.9 - 0.8 * 0.25)
    assert polynomial_sparsity(12, 0.1, 0.9, 2, 12) == pytest.approx(0.9)
    assert polynomial_sparsity(40, 0.1, 0.9, 2, 12) == pytest.approx(0.9)
    assert polynomial_sparsity(5, 0.1, 0.9, 5, 5) == 0.9
    assert polynomial_sparsity(4, 0.1, 0.9, 5, 5) == 0.1
    assert polynomial_sparsity(6, 0.1, 0.9, 5, 3) == 0.9
    assert should_prune(2, 2, 10, 4) and should_prune(6, 2, 10, 4) and should_prune(10, 2, 10, 4)
    assert not should_prune(1, 2, 10, 4) and not should_prune(3, 2, 10, 4)
    assert not should_prune(14, 2, 10, 4) and not should_prune(11, 2, 10, 1)
    assert should_prune(10_002, 2, -1, 4) and not should_prune(10_003, 2, -1, 4)
    assert should_prune(0, 0, 0, 1) and not should_prune(1, 0, 0, 1)


# ---------------------------------------------------------------------- compress/targets


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.Conv2d(2, 3, 1),
        nn.BatchNorm2d(3),
        nn.Flatten(),
        nn.Linear(12, 5),
        nn.Linear(5, 4),
    )


def test_prunable_policy_exact():
    from robustedge.compress.targets import layer_modules, prunable_modules, prunable_params

    net = _net()
    assert [n for n, _ in layer_modules(net)] == ["0", "2", "5", "6"]
    assert [n for n, _ in prunable_modules(net)] == ["2", "5"]
    assert [n for n, _ in prunable_modules(net, include_first=True)] == ["0", "2", "5"]
    assert [n for n, _ in prunable_modules(net, include_last=True)] == ["2", "5", "6"]
    assert [n for n, _ in prunable_modules(net, True, True)] == ["0", "2", "5", "6"]
    assert prunable_modules(nn.Sequential(nn.ReLU())) == []
    lin = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))  # no conv: only the last is held back
    assert [n for n, _ in prunable_modules(lin)] == ["0"]
    tail = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Linear(1, 1), nn.Conv2d(1, 1, 1))
    assert [n for n, _ in prunable_modules(tail)] == ["2"]  # layers after the last linear count
    convs = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1))  # no linear: only the first
    assert [n for n, _ in prunable_modules(convs)] == ["1"]
    params = prunable_params(net)
    assert list(params) == ["2.weight", "5.weight"] and params["5.weight"] is net[5].weight
    assert list(prunable_params(nn.Linear(2, 2), include_last=True)) == ["weight"]
    assert prunable_params(nn.Linear(2, 2)) == {}


def test_masks_and_state_exact():
    from robustedge.compress.targets import (
        MaskKeeper,
        apply_masks,
        masks_from_weights,
        zero_pruned_state,
    )

    p = nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.0]))
    q = nn.Parameter(torch.tensor([[5.0, 6.0]]))
    params = {"p": p, "q": q}
    masks = {"p": torch.tensor([True, False, True, True])}
    apply_masks(params, masks)
    assert p.tolist() == [1.0, 0.0, 3.0, 0.0] and q.tolist() == [[5.0, 6.0]]
    assert masks_from_weights(params)["p"].tolist() == [True, False, True, False]
    assert masks_from_weights(params)["q"].tolist() == [[True, True]]
    opt = torch.optim.SGD([p, q], lr=0.1, momentum=0.9)
    (p.sum() * 2 + q.sum()).backward()
    opt.step()
    p.grad = torch.ones(4)
    zero_pruned_state(opt, params, {"p": torch.tensor([True, False, False, True])})
    assert p.grad.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert opt.state[p]["momentum_buffer"].tolist() == [2.0, 0.0, 0.0, 2.0]
    assert opt.state[q]["momentum_buffer"].tolist() == [[1.0, 1.0]]
    adam = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(4)
    adam.step()
    zero_pruned_state(adam, {"p": p}, {"p": torch.tensor([False, True, True, True])})
    st = adam.state[p]
    assert st["exp_avg"][0] == 0 and st["exp_avg"][1] != 0 and float(st["step"]) == 1.0
    r = nn.Parameter(torch.tensor([1.0, 2.0]))
    r.grad = None
    zero_pruned_state(torch.optim.SGD([r], lr=1.0), {"r": r}, {"r": torch.tensor([True, False])})
    assert r.grad is None

    w = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    opt = torch.optim.SGD([w], lr=1.0, momentum=0.5)
    keeper = MaskKeeper({"w": w}, {"w": torch.tensor([True, False, True])}, opt)
    keeper.attach()
    assert len(keeper._handles) == 1
    w.sum().backward()
    assert w.grad.tolist() == [1.0, 0.0, 1.0]  # pruned gradient zeroed during backward
    opt.step()
    keeper(nn.Linear(1, 1))
    assert w.tolist() == [0.0, 0.0, 2.0] and opt.state[w]["momentum_buffer"].tolist()[1] == 0
    keeper.detach()
    assert keeper._handles == []
    w.grad = None
    w.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0, 1.0]  # hooks removed
    plain = MaskKeeper({"w": w}, {"w": torch.tensor([False, True, True])})
    plain(nn.Linear(1, 1))
    assert w.tolist() == [0.0, 0.0, 2.0] and plain.optimizer is None


def test_sparsity_accounting_exact():
    from robustedge.compress.targets import (
        count_nonzero,
        global_sparsity,
        optimizer_bytes,
        sparsity_report,
        tensor_bytes,
    )

    a, b = torch.tensor([0.0, 1.0, 0.0, 2.0]), torch.tensor([[0.0, 3.0]])
    rep = sparsity_report({"a": a, "b": b})
    assert rep == {
        "global": 0.5,
        "prunable": 6,
        "zeros": 3,
        "layers": {
            "a": {"numel": 4, "zeros": 2, "sparsity": 0.5},
            "b": {"numel": 2, "zeros": 1, "sparsity": 0.5},
        },
    }
    assert sparsity_report({}) == {"global": 0.0, "prunable": 0, "zeros": 0, "layers": {}}
    assert sparsity_report({"e": torch.zeros(0)})["layers"]["e"]["sparsity"] == 0.0
    assert global_sparsity([a, b]) == 0.5 and global_sparsity([]) == 0.0
    assert global_sparsity([torch.tensor([0.0, 0.0, 0.0, 5.0])]) == 0.75
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
        lin.bias.copy_(torch.tensor([5.0, 4.0]))
    assert count_nonzero(lin) == 4
    assert tensor_bytes([torch.zeros(3), torch.zeros(2, dtype=torch.int8)]) == 14
    assert tensor_bytes([]) == 0
    opt = torch.optim.Adam(lin.parameters(), lr=0.1)
    assert optimizer_bytes(opt) == 0
    lin(torch.ones(1, 2)).sum().backward()
    opt.step()
    # exp_avg + exp_avg_sq per parameter (6 floats each) + a float32 step per parameter
    assert optimizer_bytes(opt) == 2 * 6 * 4 + 2 * 4


# ------------------------------------------------------------------------- export/parity


def test_margins_validate():
    from robustedge.export.parity import Margins, is_quantized

    assert (Margins().clean, Margins().robust) == (1.0, 2.0)
    Margins(0.0, 0.0)
    with pytest.raises(ValueError, match="margins must be >= 0, got clean=-1 robust=2.0"):
        Margins(clean=-1)
    with pytest.raises(ValueError, match="margins must be >= 0, got clean=1.0 robust=-0.5"):
        Margins(robust=-0.5)
    with pytest.raises(ValueError):
        Margins(clean=float("nan"))
    assert is_quantized("tflite-int8") and is_quantized("onnx-int8")
    assert not is_quantized("onnx") and not is_quantized("tflite-float32")


def test_parity_record_exact():
    from robustedge.export.parity import Margins, failure_message, parity

    y = np.array([0, 1, 1, 0])
    torch_clean = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0], [1.0, 0.0]])  # 4/4 right
    torch_adv = np.array([[0.0, 1.0], [0.0, 3.0], [1.0, 0.0], [1.0, 0.0]])  # 2/4 right
    clean = torch_clean.copy()
    clean[2] = [1.5, 0.0]  # 3/4 right; diff 1.5 at [2, 0], 1.0 at [2, 1]
    adv = torch_adv.copy()
    adv[0] = [2.5, 1.0]  # now right: 3/4; diff 2.5
    rec = parity("tflite-int8", clean, adv, torch_clean, torch_adv, y, Margins(30.0, 0.0))
    assert rec["clean_acc"] == 0.75 and rec["transfer_acc"] == 0.75
    assert rec["torch_clean_acc"] == 1.0 and rec["torch_transfer_acc"] == 0.5
    assert rec["agreement_clean"] == 0.75 and rec["agreement_transfer"] == 0.75
    assert rec["max_abs_logit_diff"] == 2.5 and rec["logit_scale"] == 3.0 and rec["n"] == 4
    assert rec["clean_drop_pts"] == 25.0 and rec["transfer_drop_pts"] == -25.0
    assert rec["margins"] == {"clean": 30.0, "robust": 0.0} and rec["passed"] is True
    assert type(rec["n"]) is int and type(rec["passed"]) is bool
    rec = parity("tflite-int8", clean, adv, torch_clean, torch_adv, y, Margins(25.0, 0.0))
    assert rec["passed"] is True
    rec = parity("tflite-int8", clean, adv, torch_clean, torch_adv, y, Margins(24.9, 0.0))
    assert rec["passed"] is False
    assert failure_message("tflite-int8", rec) == (
        "parity gate failed for tflite-int8: clean 75.00% vs PyTorch 100.00% (drop 25.00 pt, "
        "allowed 24.9), transfer 75.00% vs 50.00% (drop -25.00 pt, allowed 0)"
    )
    small = np.array([[0.1, 0.0]] * 4)
    rec = parity("onnx", small, small, small, small, y, Margins())
    assert rec["logit_scale"] == 1.0 and rec["margins"]["max_abs_logit_diff"] == 1e-4
    ok = parity("onnx", clean, adv, clean, adv, y, Margins())
    assert ok["passed"] is True and ok["margins"]["max_abs_logit_diff"] == pytest.approx(3e-4)
    other = parity("tflite-float16", clean, adv, clean, adv, y, Margins())
    assert other["margins"]["max_abs_logit_diff"] == pytest.approx(3e-3)
    bad = parity("onnx", clean + 0.01, adv, clean, adv, y, Margins())
    assert bad["passed"] is False and bad["clean_drop_pts"] == 0
    assert failure_message("onnx", bad).endswith(", max |logit diff| 0.01 (allowed 0.0003)")
    assert parity("onnx", clean, adv + 0.01, clean, adv, y, Margins())["passed"] is False
    assert failure_message("onnx", bad).startswith(
        "parity gate failed for onnx: clean 75.00% vs PyTorch 75.00% (drop 0.00 pt, allowed 1)"
    )
    big_adv = parity("onnx", clean, adv * 7, clean, adv * 7, y, Margins())
    assert big_adv["logit_scale"] == 21.0  # 3 * 7: the transfer logits set the scale
    big_clean = parity("onnx", clean * 9, adv, clean * 9, adv, y, Margins())
    assert big_clean["logit_scale"] == 27.0  # 3 * 9: the clean logits set it
    rec = {
        "clean_acc": 0.25,
        "torch_clean_acc": 0.5,
        "transfer_acc": 0.1,
        "torch_transfer_acc": 0.2,
        "clean_drop_pts": 25.0,
        "transfer_drop_pts": 10.0,
        "max_abs_logit_diff": 0.5,
        "margins": {"clean": 1.5, "robust": 2.0, "max_abs_logit_diff": 0.25},
    }
    assert failure_message("tflite-float32", rec) == (
        "parity gate failed for tflite-float32: clean 25.00% vs PyTorch 50.00% (drop 25.00 pt, "
        "allowed 1.5), transfer 10.00% vs 20.00% (drop 10.00 pt, allowed 2), "
        "max |logit diff| 0.5 (allowed 0.25)"
    )


# ------------------------------------------------------------------------- export/ledger


def test_ledger_helpers_exact(tmp_path):
    from robustedge.export import ledger

    f = tmp_path / "w.bin"
    raw = bytes(range(256)) * 4
    f.write_bytes(raw)
    assert ledger.file_sizes(f) == {
        "bytes": 1024,
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0)),
    }
    assert ledger.structure_of({"structure": "shrunk"}) == "shrunk"
    assert ledger.structure_of({"structure": "masked"}) == "masked"
    assert ledger.structure_of({"structure": "other"}) == "dense"
    assert ledger.structure_of({}) == "dense"
    assert ledger.stage_name({"structure": "shrunk"}, True) == "PyTorch physically shrunk student"
    assert ledger.stage_name({"structure": "masked"}, False) == "PyTorch masked student"
    assert ledger.stage_name({}, True) == "PyTorch student"
    assert ledger.stage_name({}, False) == "PyTorch model"
    row = {"weight_zeros": 1, "weight_count": 100}
    assert ledger.verdict({"structure": "shrunk"}, row) == ledger.STRUCTURED
    assert ledger.verdict({"structure": "masked"}, {"weight_zeros": 0, "weight_count": 9}) == (
        ledger.UNSTRUCTURED
    )
    assert ledger.verdict({}, row) == ledger.UNSTRUCTURED  # exactly 1 %: sparse
    assert ledger.verdict({}, {"weight_zeros": 0, "weight_count": 100}) == ledger.DENSE
    assert ledger.verdict({}, {"weight_zeros": 0, "weight_count": 0}) == ledger.DENSE
    assert ledger.verdict({}, {"weight_zeros": 99, "weight_count": 10_000}) == ledger.DENSE
    assert ledger.STRUCTURED.startswith("physically smaller")
    assert ledger.UNSTRUCTURED.startswith("zeros only") and ledger.DENSE.startswith("dense")
    teacher = {"params": 100, "nonzeros": 50, "macs": 1000, "bytes": 400, "gzip_bytes": 0}
    student = {"params": 50, "nonzeros": 10, "macs": 250, "bytes": 100, "gzip_bytes": 7}
    assert ledger.ratios(teacher, student) == {
        "params": 0.5,
        "nonzeros": 0.2,
        "macs": 0.25,
        "bytes": 0.25,
    }
    assert ledger.ratios(teacher, {"params": 10}) == {"params": 0.1}
    assert ledger.zeros_survived({"weight_zeros": 5}, {"weight_zeros": 5})
    assert not ledger.zeros_survived({"weight_zeros": 5}, {"weight_zeros": 4})
    assert ledger.zeros_survived({"weight_zeros": 5}, {"weight_zeros": 0, "int8_weight_zeros": 6})
    assert not ledger.zeros_survived(
        {"weight_zeros": 5}, {"weight_zeros": 9, "int8_weight_zeros": 4}
    )
    assert ledger._is_weight(np.zeros(3, np.float32)) and ledger._is_weight(np.zeros(2, np.int8))
    assert ledger._is_weight(np.zeros(2, np.uint8)) and ledger._is_weight(np.zeros(2, np.int32))
    assert not ledger._is_weight(np.zeros(2, np.int64))
    assert not ledger._is_weight(np.float32(1.0).reshape(()))
    assert ledger.SPARSE_MIN == 0.01


def test_ledger_torch_stage_exact(tmp_path):
    from robustedge.export.ledger import torch_stage, weight_arrays

    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten())
    net.append(nn.Linear(2 * 4 * 4, 3))
    with torch.no_grad():
        net[0].weight[0].zero_()  # 9 zeros
        net[0].bias.zero_()  # 2 zeros, not weights
        net[3].weight[:, :4] = 0  # 12 zeros
    ws = weight_arrays(net)
    assert [w.shape for w in ws] == [(2, 1, 3, 3), (3, 32)]
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x" * 10)
    row = torch_stage("PyTorch model", net, (1, 4, 4), f)
    params = 18 + 2 + 2 + 2 + 96 + 3
    assert row == {
        "stage": "PyTorch model",
        "params": params,
        "nonzeros": params - 9 - 2 - 12 - 2,  # BatchNorm's running mean is a buffer; beta = 0
        "weight_zeros": 21,
        "weight_count": 18 + 96,
        "macs": 18 * 16 + 96,
        "bytes": 10,
        "gzip_bytes": len(gzip.compress(b"x" * 10, compresslevel=9, mtime=0)),
        "file": "model.safetensors",
    }
    no_file = torch_stage("s", net, (1, 4, 4), tmp_path / "missing")
    assert "bytes" not in no_file and "file" not in no_file
    assert "file" not in torch_stage("s", net, (1, 4, 4), None)


def test_ledger_onnx_stage_exact(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from robustedge.export.ledger import format_table, onnx_stage

    w = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]], np.float32)
    b = np.array([0.0, 1.0, 2.0], np.float32)
    q = np.array([[0, 3], [-1, 0]], np.int8)
    inits = [
        numpy_helper.from_array(w, "fc.weight"),
        numpy_helper.from_array(b, "fc.bias"),
        numpy_helper.from_array(q, "q.weight"),
        numpy_helper.from_array(np.array([0.5, 0.25], np.float32), "w_scale"),
        numpy_helper.from_array(np.array([0, 0], np.int8), "w_zero_point"),
        numpy_helper.from_array(np.array([1, 3], np.int64), "shape"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    yv = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    node = helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["y"], transB=1)
    graph = helper.make_graph([node], "g", [x], [yv], initializer=inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    row = onnx_stage(path, 42)
    raw = path.read_bytes()
    assert row == {
        "stage": "m.onnx",
        "params": 6 + 3 + 4,
        "nonzeros": 2 + 2 + 2,
        "weight_zeros": 4 + 2,
        "weight_count": 6 + 4,
        "macs": 42,
        "bytes": len(raw),
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0)),
        "file": "m.onnx",
    }
    table = format_table({"stages": [row], "verdict": "dense (no sparsity to keep)"})
    lines = table.splitlines()
    assert lines[0].split() == [
        "stage", "params", "nonzeros", "w-zeros", "MACs", "bytes", "gzip", "zeros", "kept"
    ]  # fmt: skip
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])
    assert lines[2].split() == ["m.onnx", "13", "6", "6", "42", f"{len(raw):,}",
                                f"{row['gzip_bytes']:,}", "-"]  # fmt: skip
    assert lines[3] == "sparsity: dense (no sparsity to keep)"
    long = dict(row, stage="x" * 40, zeros_survived=False, params=1234567)
    line = format_table({"stages": [long, dict(row, zeros_survived=True)], "verdict": "v"})
    first, second = line.splitlines()[2:4]
    assert first.startswith("x" * 34 + " ") and "1,234,567" in first and first.endswith("NO")
    assert second.endswith("yes")
    bare = {k: v for k, v in row.items() if k not in ("bytes", "gzip_bytes")}
    assert format_table({"stages": [bare], "verdict": "v"}).splitlines()[2].split()[5:7] == [
        "0",
        "0",
    ]


# -------------------------------------------------------------------- device/bundle_format


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A bundle built by the real builder from an export folder (artifact bytes are opaque)."""
    from robustedge.device.bundle import build_bundle
    from test_guards import _fake_export

    run = _fake_export(tmp_path / "run")
    return build_bundle(run, tmp_path / "bundle")


def _manifest(b: Path) -> dict:
    return json.loads((b / "manifest.json").read_text())


def _write(b: Path, manifest: dict) -> None:
    (b / "manifest.json").write_text(json.dumps(manifest))


def test_bundle_format_constants():
    from robustedge.device import bundle_format as bf

    assert (bf.MANIFEST, bf.SCHEMA, bf.ENTRY, bf.SQUARE) == (
        "manifest.json",
        "robustedge.bundle/1",
        "run_bundle.py",
        "square_core.py",
    )
    assert (bf.BENCH_RUNS, bf.BENCH_SQUARE_QUERIES, bf.BENCH_SQUARE_N) == (200, 100, 50)
    assert bf.CODE_SUFFIXES == (".py", ".pyc", ".pyo", ".pyd", ".so", ".pth")


def test_read_manifest_errors(tmp_path, bundle):
    from robustedge.device.bundle_format import BundleError, read_manifest

    assert read_manifest(bundle)["schema"] == "robustedge.bundle/1"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BundleError, match=f"not a bundle: {f} is a file"):
        read_manifest(f)
    with pytest.raises(BundleError, match="not a bundle: .*manifest.json is missing"):
        read_manifest(tmp_path / "nothing")
    d = tmp_path / "d"
    d.mkdir()
    (d / "manifest.json").write_text("{ nope")
    with pytest.raises(BundleError, match="corrupt bundle manifest"):
        read_manifest(d)
    (d / "manifest.json").write_bytes(b"\xff\xfe")
    with pytest.raises(BundleError, match="corrupt bundle manifest"):
        read_manifest(d)
    (d / "manifest.json").write_text("[" * 100_000)
    with pytest.raises(BundleError, match="corrupt bundle manifest"):
        read_manifest(d)
    for text in ("[1]", '{"schema": "other/1"}', "{}"):
        (d / "manifest.json").write_text(text)
        with pytest.raises(BundleError, match="is not a robustedge.bundle/1 manifest"):
            read_manifest(d)
    (d / "manifest.json").unlink()
    (d / "manifest.json").mkdir()
    with pytest.raises(BundleError, match="cannot read bundle manifest"):
        read_manifest(d)


@pytest.mark.parametrize(
    "rel,msg",
    [
        (1, "names a bad path: 1"),
        ("", "names a bad path: ''"),
        ("a\x00b", "names a bad path"),
        ("a\\b", "names a bad path"),
        ("/etc/passwd", "names a path outside the bundle: /etc/passwd"),
        ("../x", "names a path outside the bundle: ../x"),
        ("data/../../x", "outside the bundle"),
        (".", "outside the bundle: ."),
    ],
)
def test_inside_refuses(tmp_path, rel, msg):
    from robustedge.device.bundle_format import BundleError, inside

    with pytest.raises(BundleError, match=msg.replace("\\", "\\\\")):
        inside(tmp_path, rel)


def test_inside_accepts_and_refuses_symlinks(tmp_path):
    from robustedge.device.bundle_format import BundleError, inside

    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    assert inside(root, "data/x.npz") == root / "data" / "x.npz"
    assert inside(root, "a..b") == root / "a..b"
    (tmp_path / "rootother").mkdir()
    (root / "out").symlink_to(tmp_path / "rootother")  # a sibling sharing the prefix
    with pytest.raises(BundleError, match="outside the bundle: out/f"):
        inside(root, "out/f")
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(BundleError, match="outside the bundle: loop"):
        inside(root, "loop")


def test_verify_bundle_refusals(bundle):
    from robustedge.device.bundle_format import BundleError, verify_bundle

    good = _manifest(bundle)
    assert verify_bundle(bundle) == good
    for files in ({}, [], None, "x"):
        _write(bundle, {**good, "files": files})
        with pytest.raises(BundleError, match="lists no files"):
            verify_bundle(bundle)
    _write(bundle, {**good, "files": {**good["files"], "data/eval_clean.npz": "abc"}})
    with pytest.raises(BundleError, match="entry for data/eval_clean.npz is not a mapping"):
        verify_bundle(bundle)
    _write(bundle, {**good, "files": {**good["files"], "lib": {"sha256": "0", "bytes": 0}}})
    with pytest.raises(BundleError, match="incomplete bundle: lib is missing"):
        verify_bundle(bundle)
    entry = good["files"]["square_core.py"]
    _write(bundle, {**good, "files": {**good["files"], "square_core.py": {**entry, "bytes": 1}}})
    with pytest.raises(BundleError, match="square_core.py has .* bytes, manifest says 1"):
        verify_bundle(bundle)
    no_bytes = {"sha256": entry["sha256"]}
    _write(bundle, {**good, "files": {**good["files"], "square_core.py": no_bytes}})
    with pytest.raises(BundleError, match="manifest says None"):
        verify_bundle(bundle)
    _write(bundle, good)
    verify_bundle(bundle)
    link = bundle / "models" / "link.tflite"
    link.symlink_to(bundle / good["formats"]["tflite-int8"]["file"])
    with pytest.raises(BundleError, match="bundle holds a symbolic link: models/link.tflite"):
        verify_bundle(bundle)
    link.unlink()
    listed_link = dict(good["files"], **{"models/l": entry})
    link = bundle / "models" / "l"
    link.symlink_to(bundle / "square_core.py")
    _write(bundle, {**good, "files": listed_link})
    with pytest.raises(BundleError, match="incomplete bundle: models/l is missing"):
        verify_bundle(bundle)
    link.unlink()
    _write(bundle, good)
    for extra in ("lib/robustedge/evil.py", "x.so", "data/sitecustomize.pth", "a.pyc"):
        (bundle / extra).write_text("")
        with pytest.raises(BundleError, match=f"holds code the manifest does not list: {extra}"):
            verify_bundle(bundle)
        (bundle / extra).unlink()
    (bundle / "notes.txt").write_text("unlisted data is fine")
    assert verify_bundle(bundle) == good


def test_verify_bundle_requires_referenced_files_listed(bundle):
    from robustedge.device.bundle_format import BundleError, referenced_files, verify_bundle

    good = _manifest(bundle)
    model = good["formats"]["tflite-int8"]["file"]
    assert model.startswith("models/model_int8.tflite")
    assert referenced_files(good) == [
        model,
        "data/eval_clean.npz",
        "data/eval_transfer.npz",
        "square_core.py",
    ]
    assert referenced_files({**good, "square": None})[-1] == "data/eval_transfer.npz"
    assert referenced_files({**good, "square": {}})[-1] == "square_core.py"
    assert referenced_files({**good, "square": {"file": "s.py"}})[-1] == "s.py"
    for key in ("run_bundle.py", "square_core.py"):
        files = {k: v for k, v in good["files"].items() if k != key}
        _write(bundle, {**good, "files": files})
        with pytest.raises(BundleError, match=f"names '{key}', which it does not list and check"):
            verify_bundle(bundle)
    _write(bundle, {**good, "square": None, "files": good["files"]})
    verify_bundle(bundle)
    fmt = {"tflite-int8": {**good["formats"]["tflite-int8"], "file": "models/other.tflite"}}
    _write(bundle, {**good, "formats": fmt})
    with pytest.raises(BundleError, match="names 'models/other.tflite', which it does not list"):
        verify_bundle(bundle)
    bad = [
        ({"formats": {}}, "'formats' and 'eval_sets' must be mappings"),
        ({"formats": []}, "'formats' and 'eval_sets' must be mappings"),
        ({"eval_sets": []}, "'formats' and 'eval_sets' must be mappings"),
        ({"formats": {"onnx": "m.onnx"}}, "every format must be a mapping"),
        ({"square": "s.py"}, "'square' must be a mapping"),
    ]
    for change, msg in bad:
        with pytest.raises(BundleError, match=msg):
            referenced_files({**good, **change})


def test_file_entry_and_swap(tmp_path):
    import hashlib
    import shutil

    from robustedge.device.bundle_format import file_entry, swap_in_bundle
    from robustedge.errors import RobustEdgeError

    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert file_entry(f) == {"sha256": hashlib.sha256(b"abc").hexdigest(), "bytes": 3}
    assert file_entry(str(f))["bytes"] == 3
    out = tmp_path / "out"
    s1 = tmp_path / "s1"
    s1.mkdir()
    (s1 / "manifest.json").write_text("1")
    swap_in_bundle(s1, out)
    assert (out / "manifest.json").read_text() == "1" and not s1.exists()
    s2 = tmp_path / "s2"
    s2.mkdir()
    (s2 / "manifest.json").write_text("2")
    swap_in_bundle(s2, out)
    assert (out / "manifest.json").read_text() == "2" and not s2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "out"]
    other = tmp_path / "home"
    other.mkdir()
    (other / "precious").write_text("keep")
    s3 = tmp_path / "s3"
    s3.mkdir()
    with pytest.raises(RobustEdgeError, match=f"{other} exists and is not a bundle"):
        swap_in_bundle(s3, other)
    assert (other / "precious").read_text() == "keep" and s3.exists()
    (other / "precious").unlink()
    other.rmdir()
    # a swap cut short between its two renames: the old bundle waits in .out.old, out is gone
    os.replace(out, tmp_path / ".out.old")
    s4 = tmp_path / "s4"
    s4.mkdir()
    (s4 / "manifest.json").write_text("4")
    swap_in_bundle(s4, out)
    assert (out / "manifest.json").read_text() == "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "out", "s3"]
    stray = tmp_path / ".out.old"  # not a bundle: left alone, never swapped in
    stray.mkdir()
    shutil.rmtree(out)
    s5 = tmp_path / "s5"
    s5.mkdir()
    (s5 / "manifest.json").write_text("5")
    swap_in_bundle(s5, out)
    assert (out / "manifest.json").read_text() == "5" and stray.is_dir()
    other.write_text("a file")
    with pytest.raises(RobustEdgeError, match="exists and is not a bundle"):
        swap_in_bundle(s3, other)


# ------------------------------------------------------------------------ device/runner


def test_runner_parser_defaults_and_runs():
    from robustedge.device.runner import MIN_RUNS, parser

    a = parser().parse_args([])
    assert (a.bundle, a.fmt, a.backend, a.threads, a.runs, a.warmup) == (
        None,
        None,
        None,
        1,
        200,
        20,
    )
    assert (a.square_queries, a.square_n, a.square_eps, a.seed, a.out) == (
        100,
        50,
        None,
        0,
        "results.json",
    )
    assert not (a.reference_kernels or a.refuse_throttled or a.emulated or a.verify_only)
    assert MIN_RUNS == 200
    assert parser().parse_args(["--runs", "0"]).runs == 0
    assert parser().parse_args(["--runs", "200"]).runs == 200
    with pytest.raises(SystemExit):
        parser().parse_args(["--runs", "199"])
    with pytest.raises(SystemExit):
        parser().parse_args(["--runs", "1"])
    b = parser().parse_args(
        ["--format", "onnx", "--threads", "2", "--square-eps", "0.05", "--reference-kernels"]
    )
    assert (b.fmt, b.threads, b.square_eps, b.reference_kernels) == ("onnx", 2, 0.05, True)


def test_runner_run_options_mapping():
    from robustedge.device.runner import parser, run_options

    args = parser().parse_args(
        "--format onnx --threads 3 --runs 0 --warmup 4 --square-queries 7 --square-n 9 "
        "--square-eps 0.2 --reference-kernels --backend onnxruntime --seed 5 "
        "--refuse-throttled".split()
    )
    o = run_options(args, emulated=True)
    assert (o.fmt, o.threads, o.runs, o.warmup, o.square_queries, o.square_n) == (
        "onnx",
        3,
        0,
        4,
        7,
        9,
    )
    assert (o.square_eps, o.reference_kernels, o.backend, o.emulated, o.seed) == (
        0.2,
        True,
        "onnxruntime",
        True,
        5,
    )
    assert o.refuse_throttled is True
    assert run_options(parser().parse_args([]), emulated=False).emulated is False


def test_runner_check_dependencies(bundle):
    from robustedge.device.runner import MissingDependency, check_dependencies
    from robustedge.errors import RobustEdgeError

    m = _manifest(bundle)
    check_dependencies(m, None, None)  # litert or tflite-runtime is installed here
    check_dependencies({"formats": {}}, None, None)
    check_dependencies(m, "nope", None)  # an unknown format is the measurement's business
    with pytest.raises(RobustEdgeError, match="backend 'onnxruntime' reads .onnx files"):
        check_dependencies(m, None, "onnxruntime")
    onnx = {"formats": {"onnx": {"file": "models/m.onnx"}}, "default_format": "onnx"}
    check_dependencies(onnx, None, None)
    try:
        check_dependencies(onnx, None, "onnxruntime")
    except MissingDependency:  # pragma: no cover - onnxruntime is in the dev environment
        pytest.fail("onnxruntime is installed")


def test_runner_missing_numpy_and_interpreter(bundle, monkeypatch):
    import importlib.util

    from robustedge.device import runner

    real = importlib.util.find_spec

    def hide(names):
        def find(name, *a, **k):
            if name in names:
                return None
            return real(name, *a, **k)

        return find

    monkeypatch.setattr(importlib.util, "find_spec", hide({"numpy"}))
    with pytest.raises(runner.MissingDependency, match="this board has no numpy: pip install"):
        runner.check_dependencies(_manifest(bundle), None, None)

    def broken(name, *a, **k):
        raise ValueError("bad spec")

    monkeypatch.setattr(importlib.util, "find_spec", broken)
    with pytest.raises(runner.MissingDependency, match="no numpy"):
        runner.check_dependencies(_manifest(bundle), None, None)
    monkeypatch.setattr(
        importlib.util, "find_spec", hide({"ai_edge_litert", "tflite_runtime", "tensorflow"})
    )
    with pytest.raises(runner.MissingDependency, match="pip install"):
        runner.check_dependencies(_manifest(bundle), None, None)
    assert runner.main(["--bundle", str(bundle), "--out", "/dev/null/x"]) == runner.EXIT_DEPS


def test_runner_write_results_atomic(tmp_path):
    from robustedge.device.runner import write_results

    out = tmp_path / "sub" / "r.json"
    write_results(out, {"a": 1})
    assert out.read_text() == '{\n  "a": 1\n}\n'
    with pytest.raises(TypeError):
        write_results(out, {"bad": object()})
    assert json.loads(out.read_text()) == {"a": 1}  # the old file survives a failed write
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]


def test_runner_main_exit_codes(bundle, tmp_path, capsys):
    from robustedge.device import runner

    assert (runner.EXIT_OTHER, runner.EXIT_BUNDLE, runner.EXIT_DEPS) == (2, 3, 4)
    assert (runner.EXIT_WRITE, runner.EXIT_THROTTLED) == (5, 6)
    n = len(_manifest(bundle)["files"])
    assert runner.main(["--verify-only"], default_bundle=str(bundle)) == 0
    assert capsys.readouterr().out.startswith(f"bundle ok: {n} files verified")
    assert runner.main(["--verify-only", "--bundle", str(bundle)], default_bundle="/nope") == 0
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(bundle)
    try:
        assert runner.main(["--verify-only"]) == 0
    finally:
        os.chdir(cwd)
    capsys.readouterr()
    assert runner.main(["--verify-only", "--bundle", str(tmp_path / "none")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: refusing bundle: not a bundle:") and err.count("\n") == 1
    out = tmp_path / "r.json"
    # the model bytes are not a model: the measurement fails in one line, nothing is written
    code = runner.main(["--bundle", str(bundle), "--runs", "0", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and not out.exists()
    code = runner.main(["--bundle", str(bundle), "--threads", "0", "--out", str(out)])
    assert code == 2 and "threads must be >= 1, got 0" in capsys.readouterr().err
    code = runner.main(["--bundle", str(bundle), "--format", "onnx", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and "format 'onnx' is not in this bundle (has: tflite-int8)" in err


# ------------------------------------------------------------------------ recipe/runner


def _stage(root: Path, sid: str, log: list, up=(), text="x", files=None, **kw):
    from robustedge.recipe.runner import Stage

    path = root / sid / "out.txt"

    def execute():
        log.append(sid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    outputs = (lambda: [path]) if files is None else files
    return Stage(sid, "k", {"v": 1}, execute, outputs, up, **kw)


def test_stage_runner_records_and_callbacks(tmp_path):
    from robustedge.recipe.runner import SCHEMA, STAGE_FILE, StageRunner, digest_of, file_sha256

    assert (STAGE_FILE, SCHEMA) == ("stage.json", "robustedge.recipe.stage/1")
    seen, started, log = [], [], []
    r = StageRunner(tmp_path, on_result=seen.append, on_start=started.append)
    res = r.run([_stage(tmp_path, "a", log), _stage(tmp_path, "b", log, up=("a",))])
    assert [x.status for x in res] == ["done", "done"] and started == ["a", "b"]
    assert [x.id for x in seen] == ["a", "b"] and log == ["a", "b"]
    rec = json.loads((tmp_path / "stages" / "b" / "stage.json").read_text())
    outs = {"a/out.txt": file_sha256(tmp_path / "a" / "out.txt")}
    assert res[0].outputs == outs and res[0].digest == digest_of(outs)
    assert rec["schema"] == SCHEMA and rec["id"] == "b" and rec["kind"] == "k"
    assert rec["config"] == {"v": 1} and rec["upstream"] == {"a": digest_of(outs)}
    assert rec["outputs"] == {"b/out.txt": file_sha256(tmp_path / "b" / "out.txt")}
    assert rec["seconds"] >= 0 and rec["finished"] and len(rec["input_hash"]) == 64
    assert r.record_path("b") == tmp_path / "stages" / "b" / "stage.json"
    seen.clear()
    started.clear()
    again = StageRunner(tmp_path, on_result=seen.append, on_start=started.append)
    res = again.run([_stage(tmp_path, "a", log), _stage(tmp_path, "b", log, up=("a",))])
    assert [x.status for x in res] == ["cached", "cached"] and started == []
    assert res[1].digest == digest_of(rec["outputs"]) and res[1].outputs == rec["outputs"]
    assert [x.id for x in seen] == ["a", "b"] and log == ["a", "b"]


def test_stage_runner_skips(tmp_path):
    from robustedge.recipe.runner import SkipStage, StageRunner

    log: list = []

    def skip():
        raise SkipStage("no board here")

    skipper = _stage(tmp_path, "s", log)
    skipper.execute = skip
    res = StageRunner(tmp_path).run(
        [
            _stage(tmp_path, "opt", log, optional_note="qemu missing"),
            skipper,
            _stage(tmp_path, "after", log, up=("s",)),
            _stage(tmp_path, "ghost", log, up=("never",)),
        ]
    )
    got = [(x.id, x.status, x.note) for x in res]
    assert got == [
        ("opt", "skipped", "qemu missing"),
        ("s", "skipped", "no board here"),
        ("after", "skipped", "upstream s did not run"),
        ("ghost", "skipped", "upstream never did not run"),
    ]
    assert log == [] and not (tmp_path / "stages" / "s" / "stage.json").exists()


def test_stage_runner_missing_outputs(tmp_path):
    from robustedge.errors import RobustEdgeError
    from robustedge.recipe.runner import StageRunner

    log: list = []
    none = _stage(tmp_path, "n", log, files=lambda: [])
    with pytest.raises(RobustEdgeError, match="stage n finished without writing any file"):
        StageRunner(tmp_path).run([none])
    gone = _stage(tmp_path, "g", log, files=lambda: [tmp_path / "g" / "out.txt", tmp_path / "z"])
    with pytest.raises(RobustEdgeError, match=f"stage g finished without writing {tmp_path}/z"):
        StageRunner(tmp_path).run([gone])
    assert not (tmp_path / "stages" / "g" / "stage.json").exists()


def test_stage_runner_invalid_records_rerun(tmp_path):
    from robustedge.recipe.runner import StageRunner, input_hash

    log: list = []
    StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])
    rec_path = tmp_path / "stages" / "a" / "stage.json"
    rec = json.loads(rec_path.read_text())
    st = _stage(tmp_path, "a", log)
    assert StageRunner(tmp_path).valid_record(st, rec["input_hash"]) == rec["outputs"]
    assert StageRunner(tmp_path).valid_record(st, "other") is None
    assert rec["input_hash"] == input_hash(st, {})
    variants = [
        "{ broken",
        json.dumps({**rec, "outputs": {}}),
        json.dumps({k: v for k, v in rec.items() if k != "outputs"}),
        json.dumps({k: v for k, v in rec.items() if k != "input_hash"}),
        json.dumps({**rec, "outputs": 5}),
        json.dumps({**rec, "outputs": {"../../etc/passwd": "0" * 64}}),
        json.dumps({**rec, "outputs": {"a/out.txt": "0" * 64}}),
        json.dumps({**rec, "outputs": {"a/missing.txt": rec["outputs"]["a/out.txt"]}}),
    ]
    for i, text in enumerate(variants):
        rec_path.write_text(text)
        res = StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])
        assert res[0].status == "done", (i, text)
    assert log == ["a"] * (len(variants) + 1)
    assert StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])[0].status == "cached"


def test_input_hash_and_digest():
    from robustedge.recipe.runner import Stage, digest_of, input_hash

    def s(kind="k", config=None):
        return Stage("id", kind, config or {"a": 1, "b": 2}, lambda: None, lambda: [])

    h = input_hash(s(), {"u": "d"})
    assert h == input_hash(s(config={"b": 2, "a": 1}), {"u": "d"})
    assert h != input_hash(s(kind="other"), {"u": "d"})
    assert h != input_hash(s(config={"a": 1, "b": 3}), {"u": "d"})
    assert h != input_hash(s(), {"u": "e"}) and h != input_hash(s(), {})
    assert input_hash(s(config={"p": Path("x")}), {}) == input_hash(s(config={"p": "x"}), {})
    assert digest_of({"b": "2", "a": "1"}) == digest_of({"a": "1", "b": "2"})
    assert digest_of({"a": "1"}) != digest_of({"a": "2"}) and len(digest_of({})) == 64


def test_files_under(tmp_path):
    from robustedge.recipe.runner import files_under

    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("")
    (tmp_path / "d" / "sub" / "a.txt").write_text("")
    assert files_under(tmp_path / "d") == [tmp_path / "d" / "b.txt", tmp_path / "d/sub/a.txt"]
    assert files_under(tmp_path / "d", ["x", "b.txt"]) == [tmp_path / "d/x", tmp_path / "d/b.txt"]
    assert files_under(tmp_path / "none") == [] and files_under(tmp_path / "d", []) == []
    assert files_under(str(tmp_path / "d"), ["q"]) == [tmp_path / "d" / "q"]


_TFLITE: dict = {}  # built once per process (mutmut's forked workers inherit it)


def _tflite_models() -> dict:
    """A 4 -> 3 dense layer with 5 zero weights as float32 and full-int8 .tflite bytes."""
    if not _TFLITE:
        tf = pytest.importorskip("tensorflow")
        w = np.array(
            [[0.0, 1.0, -2.0], [0.5, 0.0, 0.25], [0.0, -1.5, 0.0], [2.0, 0.75, 0.0]], np.float32
        )
        b = np.array([0.1, -0.2, 0.3], np.float32)
        wt, bt = tf.constant(w), tf.constant(b)

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def dense(x):
            return tf.matmul(x, wt) + bt

        fn = dense.get_concrete_function()
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], dense)
        _TFLITE["float"] = conv.convert()
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], dense)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        rng = np.random.default_rng(0)
        conv.representative_dataset = lambda: (
            [rng.random((1, 4), dtype=np.float32)] for _ in range(16)
        )
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
        _TFLITE["int8"] = conv.convert()
    return _TFLITE


@pytest.mark.export
@pytest.mark.slow  # TensorFlow's converter: ~30-50 s on the loaded 2-core machine
@pytest.mark.parametrize("kind", ["float", "int8"])
def test_ledger_tflite_stage_exact(tmp_path, kind):
    pytest.importorskip("tflite")
    pytest.importorskip("ai_edge_litert")
    from robustedge.export.ledger import tflite_constants, tflite_stage, zeros_survived

    path = tmp_path / f"m_{kind}.tflite"
    path.write_bytes(_tflite_models()[kind])
    consts = tflite_constants(path)
    shapes = sorted(tuple(a.shape) for _d, a in consts)
    assert shapes == [(3,), (3, 4)], shapes  # FULLY_CONNECTED stores W transposed
    row = tflite_stage(path, 12)
    raw = path.read_bytes()
    want = {
        "stage": path.name,
        "params": 15,
        "nonzeros": 7 + 3,
        "weight_zeros": 5,
        "weight_count": 12,
        "macs": 12,
        "bytes": len(raw),
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0)),
        "file": path.name,
    }
    if kind == "int8":
        want["int8_weight_zeros"] = 5
        dtypes = {np.dtype(d["dtype"]).name for d, _a in consts}
        assert dtypes == {"int8", "int32"}
    assert row == want
    assert zeros_survived({"weight_zeros": 5}, row)


def test_ledger_sparse_savings_and_table(tmp_path):
    from robustedge.export.ledger import format_table, ratios, sparse_savings

    dense, sparse, other = tmp_path / "d.tflite", tmp_path / "s.tflite", tmp_path / "o"
    dense.write_bytes(b"\0" * 1000)
    sparse.write_bytes(bytes(range(200)) * 2)
    other.write_bytes(b"x")
    made = {"tflite-int8": dense, "tflite-int8-sparse": sparse, "onnx": other}
    gz = lambda p: len(gzip.compress(p.read_bytes(), compresslevel=9, mtime=0))  # noqa: E731
    got = sparse_savings(
        made,
        {"tflite-int8-sparse": "tflite-int8", "missing": "tflite-int8", "onnx": "gone"},
    )
    assert got == {
        "tflite-int8-sparse": {
            "dense_format": "tflite-int8",
            "bytes": 400,
            "dense_bytes": 1000,
            "saved_bytes": 600,
            "ratio": 0.4,
            "gzip_bytes": gz(sparse),
            "dense_gzip_bytes": gz(dense),
        }
    }
    assert sparse_savings(made, {}) == {}
    row = {"stage": "s", "params": 1, "nonzeros": 1, "weight_zeros": 0, "macs": 1}
    table = format_table({"stages": [row], "verdict": "v", "sparse_encoding": got})
    assert table.splitlines()[-1] == (
        "tflite-int8-sparse: 400 B vs 1,000 B dense (600 B saved by the sparse encoding)"
    )
    assert format_table({"stages": [row], "verdict": "v", "sparse_encoding": None}).endswith(
        "sparsity: v"
    )
    teacher = {"params": 4, "nonzeros": 4, "macs": 4, "bytes": 4, "gzip_bytes": 8}
    assert ratios(teacher, {"gzip_bytes": 2}) == {"gzip_bytes": 0.25}


@pytest.fixture
def onnx_bundle(tmp_path) -> Path:
    """A bundle holding a real ONNX model (flatten + dense, weights known) and eval sets."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from robustedge.device.bundle import build_bundle
    from robustedge.hashing import sha256_file

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 10)).astype(np.float32)
    x = rng.random((20, 1, 8, 8), dtype=np.float32)
    y = (x.reshape(20, -1) @ w).argmax(1).astype(np.int64)
    y[:5] = (y[:5] + 1) % 10  # 15 of 20 right
    ex = tmp_path / "run" / "export"
    ex.mkdir(parents=True)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(ex / "m.onnx"))
    np.savez(ex / "eval_clean.npz", x=x, y=y)
    np.savez(ex / "eval_transfer.npz", x=x[::-1].copy(), y=y[::-1].copy())
    export = {
        "run": "r",
        "data": "digits",
        "num_classes": 10,
        "input_shape_nchw": [1, 8, 8],
        "artifacts": {
            "onnx": {
                "file": "m.onnx",
                "sha256": sha256_file(ex / "m.onnx"),
                "input": {"name": "x", "layout": "NCHW", "dtype": "float32"},
                "output": {"dtype": "float32"},
                "parity": {"clean_acc": 0.75, "transfer_acc": 0.75},
            }
        },
        "eval_sets": {"clean": "eval_clean.npz", "transfer": "eval_transfer.npz"},
        "eval_sha256": {
            "clean": sha256_file(ex / "eval_clean.npz"),
            "transfer": sha256_file(ex / "eval_transfer.npz"),
        },
        "transfer_attack": {"attack": "pgd", "eps": 0.1},
    }
    (ex / "export.json").write_text(json.dumps(export))
    return build_bundle(tmp_path / "run", tmp_path / "bundle")


def test_runner_main_measures_and_writes(onnx_bundle, tmp_path, capsys):
    from robustedge.device import runner

    out = tmp_path / "res" / "r.json"
    args = ["--bundle", str(onnx_bundle), "--runs", "0", "--square-queries", "0"]
    assert runner.main([*args, "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    r = json.loads(out.read_text())
    assert r["accuracy"]["clean"] == 0.75 and r["accuracy"]["transfer"] == 0.75
    assert r["backend"] == "onnxruntime" and r["emulated"] is False
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]
    assert runner.main([*args, "--emulated", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["emulated"] is True
    capsys.readouterr()
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert runner.main([*args, "--out", str(blocked / "r.json")]) == runner.EXIT_WRITE
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {blocked / 'r.json'}: ") and err.count("\n") == 1
    assert runner.main([*args, "--backend", "litert", "--out", str(out)]) == runner.EXIT_OTHER
    assert "backend 'litert' reads .tflite files" in capsys.readouterr().err
    assert runner.main([*args, "--format", "onnx", "--out", str(out)]) == 0
    capsys.readouterr()
    assert runner.main(["--bundle", str(onnx_bundle), "--verify-only"]) == 0
    m = _manifest(onnx_bundle)
    packed = sum(a.get("codec") is not None for a in m["formats"].values())
    extra = f", {packed} compressed model(s) inflated and verified" if packed else ""
    assert capsys.readouterr().out == f"bundle ok: {len(m['files'])} files verified{extra}\n"


def test_runner_default_format_choice(onnx_bundle):
    from robustedge.device.runner import check_dependencies
    from robustedge.errors import RobustEdgeError

    m = _manifest(onnx_bundle)
    tfl = {"file": "models/m.tflite"}
    # default_format wins over the alphabetical first, which wins when there is none
    both = {"formats": {**m["formats"], "a-tflite": tfl}, "default_format": "onnx"}
    with pytest.raises(RobustEdgeError, match="reads .tflite files, not m.onnx"):
        check_dependencies(both, None, "litert")
    check_dependencies(both, None, "onnxruntime")
    first = {"formats": {**m["formats"], "a-tflite": tfl}}
    check_dependencies(first, None, "litert")  # a-tflite sorts before onnx
    with pytest.raises(RobustEdgeError, match="reads .onnx files, not m.tflite"):
        check_dependencies(first, None, "onnxruntime")
    check_dependencies(first, "onnx", "onnxruntime")


def test_stage_runner_log_and_timing_fields(tmp_path, caplog):
    import logging
    import re
    import time

    from robustedge.recipe.runner import StageRunner

    log: list = []
    caplog.set_level(logging.INFO, logger="robustedge.recipe.runner")
    t0 = time.perf_counter()
    res = StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])
    elapsed = time.perf_counter() - t0
    assert 0.0 <= res[0].seconds <= elapsed  # the stage's own run time, inside the call's
    rec = json.loads((tmp_path / "stages" / "a" / "stage.json").read_text())
    assert rec["seconds"] == round(res[0].seconds, 3)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", rec["finished"])
    StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])
    (tmp_path / "a" / "out.txt").write_text("changed")
    StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])
    msgs = [r.getMessage() for r in caplog.records if r.name == "robustedge.recipe.runner"]
    assert msgs == [
        "stage a: running",
        "stage a: cached",
        "stage a: output a/out.txt missing or changed",
        "stage a: running",
    ]
