"""Exact-value unit tests of compress (prox operators, schedules, targets), to kill mutmut's
mutants (issue 16; the rule is in tests/test_exact_attacks.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

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
