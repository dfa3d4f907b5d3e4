"""Prox operators, projections, masks, KD loss and config validation (fast, no training)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustedge.compress import CompressConfig, kd_loss, make_kd_task_loss
from robustedge.compress.distill import RememberClean
from robustedge.compress.method_prox import ramp_window
from robustedge.compress.prox import (
    erk_keep_counts,
    group_norms,
    group_soft_threshold,
    keep_count,
    project_topk,
    reweighted_steps,
    soft_threshold,
    topk_masks,
    weighted_soft_threshold,
)
from robustedge.compress.schedule import LamController, cubic_ramp
from robustedge.compress.targets import MaskKeeper, apply_masks, prunable_params, sparsity_report
from robustedge.models import ModelSpec, build_model


def test_soft_threshold_math():
    w = torch.tensor([-3.0, -0.5, 0.0, 0.2, 1.0, 2.5])
    out = soft_threshold(w, 1.0)
    assert torch.equal(out, torch.tensor([-2.0, 0.0, 0.0, 0.0, 0.0, 1.5]))
    # prox definition: argmin_v 0.5 (v - w)^2 + step |v|, checked on a grid
    grid = torch.linspace(-4, 4, 80001)
    for wi in w:
        obj = 0.5 * (grid - wi) ** 2 + 1.0 * grid.abs()
        assert abs(float(grid[obj.argmin()]) - float(soft_threshold(wi, 1.0))) < 1e-3
    assert torch.equal(soft_threshold(w, 0.0), w)
    with pytest.raises(ValueError):
        soft_threshold(w, -0.1)


def test_weighted_threshold_shrinks_small_weights_more():
    w = torch.tensor([0.01, -0.02, 0.5, -1.0])
    steps = reweighted_steps(w, 0.01)
    assert steps[0] > steps[2] > steps[3] > 0
    out = weighted_soft_threshold(w, steps)
    assert torch.all(out.abs() <= w.abs()) and torch.all(out * w >= 0)


def test_group_soft_threshold():
    w = torch.zeros(3, 2, 2, 2)
    w[0] = 0.1  # norm 0.1 * sqrt(8) < 1: zeroed
    w[1] = 1.0  # norm sqrt(8): shrunk by factor 1 - 1/sqrt(8)
    out = group_soft_threshold(w, 1.0)
    assert torch.all(out[0] == 0) and torch.all(out[2] == 0)
    assert torch.allclose(group_norms(out)[1], torch.tensor(8**0.5 - 1.0))
    assert torch.allclose(out[1] / w[1], torch.full_like(w[1], 1 - 1 / 8**0.5))


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95, 0.99])
def test_topk_exact_sparsity_and_idempotent(scope, sparsity):
    g = torch.Generator().manual_seed(0)
    ws = {"a": torch.randn(37, 5, generator=g), "b": torch.randn(8, 3, 3, 3, generator=g)}
    masks = topk_masks({n: w.abs() for n, w in ws.items()}, sparsity, scope)
    if scope == "global":
        total = sum(w.numel() for w in ws.values())
        pruned = sum(int((~m).sum()) for m in masks.values())
        assert pruned == round(sparsity * total)
    else:
        for n, w in ws.items():
            assert int((~masks[n]).sum()) == round(sparsity * w.numel())
    once = project_topk(ws, sparsity, scope)
    twice = project_topk(once, sparsity, scope)
    for n in ws:
        assert torch.equal(once[n], twice[n])
        kept = once[n][masks[n]]
        assert torch.equal(kept, ws[n][masks[n]])  # projection keeps survivors unchanged


def test_keep_count_rejects_bad_sparsity():
    assert keep_count(100, 0.95) == 5
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            keep_count(10, bad)


def test_prunable_policy_excludes_first_conv_and_last_linear():
    model = build_model(ModelSpec("lenet5", (1, 8, 8), 10))
    assert list(prunable_params(model)) == ["3.weight", "7.weight", "9.weight"]
    all_ = prunable_params(model, include_first=True, include_last=True)
    assert list(all_) == ["0.weight", "3.weight", "7.weight", "9.weight", "11.weight"]


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_masks_persist_through_training_with_momentum(opt):
    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet5", (1, 8, 8), 10))
    params = prunable_params(model)
    optimizer = (
        torch.optim.Adam(model.parameters(), lr=1e-2)
        if opt == "adam"
        else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    )
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    for _ in range(3):  # build up momentum on every weight first
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    masks = topk_masks({n: p.detach().abs() for n, p in params.items()}, 0.9)
    apply_masks(params, masks)
    keeper = MaskKeeper(params, masks, optimizer)
    keeper.attach()
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        keeper(model)
        for n, p in params.items():
            assert torch.all(p[~masks[n]] == 0)
            for buf in optimizer.state[p].values():
                if torch.is_tensor(buf) and buf.shape == p.shape:
                    assert torch.all(buf[~masks[n]] == 0)
    keeper.detach()
    rep = sparsity_report(params)
    assert rep["zeros"] == round(0.9 * rep["prunable"])


def test_kd_loss_math():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    assert torch.allclose(kd_loss(s, t, y, 0.0, 4.0), F.cross_entropy(s, y))
    kl = (F.softmax(t / 4, 1) * (F.log_softmax(t / 4, 1) - F.log_softmax(s / 4, 1))).sum(1).mean()
    assert torch.allclose(kd_loss(s, t, y, 1.0, 4.0), 16 * kl, atol=1e-6)
    mix = kd_loss(s, t, y, 0.3, 2.0)
    assert torch.allclose(mix, 0.7 * F.cross_entropy(s, y) + 0.3 * 4 * kd_loss(s, t, y, 1, 2) / 4)


def test_kd_task_loss_queries_teacher_on_same_examples():
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    seen = []
    teacher.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    loss = make_kd_task_loss(teacher, 0.5, 4.0)
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    logits = teacher(x).detach()
    seen.clear()
    value = loss(logits, y, x)
    assert len(seen) == 1 and torch.equal(seen[0], x)
    assert torch.allclose(value, 0.5 * F.cross_entropy(logits, y))  # KL(T || T) = 0
    assert not any(p.requires_grad for p in teacher.parameters())


def test_lam_controller_follows_ramp():
    assert cubic_ramp(0, 10, 0.9) == 0.0 and cubic_ramp(10, 10, 0.9) == pytest.approx(0.9)
    ctl = LamController(0.9, 1.0, ramp=10)
    assert ctl.update(0.0) > 1.0  # too dense: lam grows
    ctl.step, before = 20, ctl.lam
    assert ctl.update(0.95) < before  # too sparse: lam shrinks


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sparsity": 1.0},
        {"sparsity": -0.1},
        {"epochs": 0},
        {"kd_alpha": 1.5},
        {"kd_temp": 0.0},
        {"method": "obd"},
        {"adversary": "nope"},
        {"scope": "block"},
        {"structured": True, "method": "admm"},
        {"lam_schedule": "cosine"},
        {"lam0": -1.0},
        {"ramp_start": 0.8, "ramp_end": 0.5},
        {"ramp_end": 1.5},
        {"kd_target": "teacher"},
    ],
)
def test_config_validates(kwargs):
    with pytest.raises((ValueError, KeyError)):
        CompressConfig.from_keys(teacher="t", **kwargs)


def test_config_resolves_method_defaults():
    assert CompressConfig(teacher="t", method="hydra").adversary == "trades"
    assert CompressConfig(teacher="t", method="prox").kd_alpha == 0.5
    assert CompressConfig(teacher="t", method="admm").kd_alpha == 0.0
    d = CompressConfig(teacher="t").to_dict()
    assert CompressConfig.from_dict(d) == CompressConfig(teacher="t")


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95, 0.99])
def test_erk_budgets_exact_and_favour_small_fan_in(sparsity):
    shapes = {"conv": (16, 6, 5, 5), "fc1": (120, 64), "fc2": (84, 120), "tiny": (10, 4)}
    keep = erk_keep_counts(shapes, sparsity)
    total = sum(torch.Size(sh).numel() for sh in shapes.values())
    assert sum(keep.values()) == keep_count(total, sparsity)  # exact overall budget
    dens = {n: keep[n] / torch.Size(sh).numel() for n, sh in shapes.items()}
    # density ~ sum(shape) / prod(shape): the small layer is densest, capped at fully dense
    assert dens["tiny"] >= dens["fc2"] and all(0 <= d <= 1 for d in dens.values())
    if sparsity <= 0.5:
        assert keep["tiny"] == 40
    masks = topk_masks({n: torch.rand(sh) for n, sh in shapes.items()}, sparsity, "erk")
    assert {n: int(m.sum()) for n, m in masks.items()} == keep


def test_ramp_window_delays_and_ends_the_ramp():
    cfg = CompressConfig.from_keys(teacher="t", epochs=10, ramp_start=0.2, ramp_end=0.8)
    assert ramp_window(cfg, 10) == (20, 60)  # starts at step 20, reaches target at step 80
    assert ramp_window(CompressConfig(teacher="t", epochs=10), 10) == (0, 75)  # default


def test_kd_clean_target_queries_teacher_on_clean_batch():
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    seen = []
    teacher.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    loss = make_kd_task_loss(teacher, 0.5, 1.0, target="clean")

    class ShiftAdversary:  # a training adversary that feeds x + 0.1 to the model
        eps = 0.1

        def loss(self, model, x, y, task_loss):
            return task_loss(model(x + 0.1), y, x + 0.1)

    adv = RememberClean(ShiftAdversary(), loss)
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    adv.loss(student, x, y, loss)
    assert torch.equal(seen[-1], x)  # teacher saw the clean batch, not x + 0.1
    assert adv.eps == 0.1  # everything else is the wrapped adversary's
    seen.clear()
    make_kd_task_loss(teacher, 0.5, 1.0)(student(x + 0.1), y, x + 0.1)
    assert torch.equal(seen[-1], x + 0.1)  # default: the same examples as the student
    with pytest.raises(ValueError, match="target"):
        make_kd_task_loss(teacher, 0.5, 1.0, target="both")
