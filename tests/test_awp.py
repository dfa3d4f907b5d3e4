"""Adversarial weight perturbation (``robustedge.training.awp``, ``CompressConfig.awp_gamma``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from robustedge.compress import CompressConfig, compress_run, read_masks
from robustedge.models import load_model
from robustedge.training.adversaries import build_adversary, ce_task_loss
from robustedge.training.awp import AWP


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with torch.no_grad():
        net[1].weight[:, :20] = 0.0  # pruned weights
    return net


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)


@pytest.mark.parametrize("name", ["pgd", "fgsm", "trades", "none"])
def test_the_gradient_is_the_one_at_the_worst_nearby_weights(name):
    """The loss AWP returns equals the adversary's objective at w + v on the same examples,
    v = gamma ||w_l|| g_l / ||g_l|| on the kept entries (g: the objective's gradient at w), and
    its gradient lands on w."""
    net, (x, y), gamma = _net(), _batch(), 0.01
    inner = build_adversary(name, 0.1 if name != "none" else 0.0, 3)
    inner.seed(0)
    state = inner.generator.get_state()
    loss = AWP(inner, gamma).loss(net, x, y, ce_task_loss)
    loss.backward()
    # the reference: craft the same examples, take the ascent step by hand, perturb a copy
    inner.generator.set_state(state)
    x_used = inner.examples(net, x, y)
    ref = copy.deepcopy(net)
    ref.zero_grad()
    inner.objective(ref, x, y, x_used, ce_task_loss).backward()
    with torch.no_grad():
        for p in ref.parameters():
            if p.dim() > 1:
                g = p.grad * (p != 0)
                v = gamma * p.norm() / g.norm() * g
                assert v.norm() == pytest.approx(gamma * p.norm(), rel=1e-4)
                assert torch.all(v[p == 0] == 0)  # a pruned weight is never perturbed
                p.add_(v)
    ref.zero_grad()
    want = inner.objective(ref, x, y, x_used, ce_task_loss)
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    for (n, p), q in zip(net.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), n
    # the perturbation raised the loss, and the weights themselves did not move
    assert loss.item() > inner.objective(net, x, y, x_used, ce_task_loss).item()
    assert torch.all(net[1].weight[:, :20] == 0)


def test_bad_gamma_and_bad_config_are_refused():
    for gamma in (0.0, -0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            AWP(build_adversary("pgd", 0.1, 3), gamma)
    with pytest.raises(ValueError, match="awp_gamma"):
        CompressConfig(teacher="t", awp_gamma=1.5)
    with pytest.raises(ValueError, match="method hydra trains none"):
        CompressConfig(teacher="t", method="hydra", awp_gamma=0.01)
    assert CompressConfig(teacher="t").awp_gamma == 0.0  # off by default (it did not help)


def test_compress_with_awp_trains_differently_and_says_so(tiny_run, tmp_path):
    kw = dict(teacher=str(tiny_run), adversary="pgd", steps=2, eps=0.1, epochs=1)
    kw.update(finetune_epochs=1, batch_size=128, sparsity=0.8)
    plain = compress_run(CompressConfig(**kw), tmp_path / "plain", eval_attacks=())
    awp = compress_run(CompressConfig(**kw, awp_gamma=0.01), tmp_path / "awp", eval_attacks=())
    assert awp["awp_gamma"] == 0.01 and "awp_gamma" not in plain
    masks = read_masks(tmp_path / "awp")
    weights = dict(load_model(tmp_path / "awp")[0].named_parameters())
    for name, mask in masks.items():
        assert torch.all(weights[name][~mask] == 0)
    before = dict(load_model(tmp_path / "plain")[0].named_parameters())
    assert any(not torch.equal(before[k], weights[k]) for k in before)
    assert awp["sparsity"]["global"] == plain["sparsity"]["global"]
