"""HARP (Zhao & Wressnegger, ICLR 2023): one step of its mask and rate term checked against
values computed by hand, its schedule and allocation rules, and a tiny end-to-end compress
(unstructured: the target sparsity exactly; structured: no more MACs than the uniform student)."""

from __future__ import annotations

import math

import pytest
import torch

from robustedge.compress import PRUNERS, CompressConfig, compress_run
from robustedge.compress.method_harp import (
    DynamicGamma,
    HarpOptions,
    HarpState,
    allocate,
    kept_entries,
    rate_of,
    rate_param,
    score_mask,
)
from robustedge.config import FieldError
from robustedge.io import read_json
from robustedge.models import count_params, load_model


def test_mask_from_scores_and_rate_and_its_gradients_by_hand():
    # k_min 0.1, r = 0: k = sigmoid(0) * 0.9 + 0.1 = 0.55; 4 entries keep 4 - int(0.45 * 4) = 3
    scores = torch.tensor([0.5, -2.0, 0.1, 1.0], requires_grad=True)
    r = torch.tensor(0.0, requires_grad=True)
    k = rate_of(r, 0.1)
    assert float(k.detach()) == pytest.approx(0.55)
    mask = score_mask(scores, k, structured=False)
    assert mask.tolist() == [1.0, 1.0, 0.0, 1.0]  # |s| = .5, 2, .1, 1: the smallest goes
    c = torch.tensor([1.0, 2.0, 3.0, 4.0])
    (mask * c).sum().backward()
    # straight through: dL/dm = c; the scores get c * sign(s), the rate sum(c) = 10,
    # and r gets 10 * sigmoid'(0) * (1 - k_min) = 10 * 0.25 * 0.9
    assert scores.grad.tolist() == [1.0, -2.0, 3.0, 4.0]
    assert float(r.grad) == pytest.approx(2.25)


def test_structured_mask_keeps_round_k_channels():
    scores = torch.tensor([0.3, 0.1, 0.9, 0.2, 0.5])
    # round(0.6 * 5) = 3 channels by |score|; at least one even at the smallest rate
    assert score_mask(scores, torch.tensor(0.6), True).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert score_mask(scores, torch.tensor(0.01), True).tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_rate_loss_and_its_gradient_by_hand():
    # two layers of 10 and 30 weights, 90 % sparsity: target kept 0.1, k_min = 0.1 * 0.1
    state = HarpState([torch.ones(10), torch.ones(30)], 0.9, HarpOptions())
    with torch.no_grad():
        state.r.copy_(torch.tensor([0.0, math.log(3.0)]))
    k = state.rates()
    assert k.tolist() == pytest.approx([0.505, 0.7525])  # sigmoid 0.5 / 0.75, * 0.99 + 0.01
    loss = state.rate_loss()
    # kept = (10 * 0.505 + 30 * 0.7525) / 40 = 0.690625; loss = 0.690625 / 0.1 - 1
    assert float(loss) == pytest.approx(5.90625)
    loss.backward()
    # d/dr_l = n_l / (N * 0.1) * sigmoid'(r_l) * 0.99
    assert state.r.grad.tolist() == pytest.approx([2.5 * 0.25 * 0.99, 7.5 * 0.1875 * 0.99])
    with torch.no_grad():  # at or below the target the hinge is 0
        state.r.fill_(-20.0)
    assert float(state.rate_loss()) == 0.0


def test_rates_start_from_the_uniform_strategy_or_the_target():
    assert float(rate_of(torch.tensor(rate_param(0.1, 0.001)), 0.001)) == pytest.approx(0.1)
    s99 = HarpState([torch.ones(100)], 0.99, HarpOptions())
    assert float(s99.rates()[0]) == pytest.approx(0.1)  # 99 %: from 0.1 down to 0.01
    s50 = HarpState([torch.ones(100)], 0.5, HarpOptions())
    assert float(s50.rates()[0]) == pytest.approx(0.5)  # never below the target's kept 0.5
    assert kept_entries(100, 0.1) == 10 and kept_entries(7, 0.5) == 4


def test_dynamic_gamma_grows_per_epoch_and_freezes_once_met():
    g = DynamicGamma(0.01)
    assert g() == 0.01
    g.epoch_end(2.0)
    assert g() == pytest.approx(0.02)
    g.epoch_end(0.00004)  # rounds to 0: the rate is met, gamma freezes at 0.02
    g.epoch_end(1.0)
    assert g() == pytest.approx(0.02) and g.get() == {"epochs": 3, "frozen": g.frozen}


def test_allocate_is_proportional_capped_and_exact():
    assert allocate([1, 3], [10, 10], 8) == [2, 6]
    assert allocate([1, 3], [10, 4], 8) == [4, 4]  # the capped layer's surplus moves
    assert allocate([1, 1, 1], [5, 5, 5], 4) == [2, 1, 1]  # largest remainder, ties by order
    with pytest.raises(ValueError):
        allocate([1], [3], 4)


def test_options_are_checked_and_registered():
    assert PRUNERS["harp"].options is HarpOptions and PRUNERS["harp"].structured
    with pytest.raises(FieldError, match="rate_alpha"):
        HarpOptions(rate_alpha=0.0)
    cfg = CompressConfig.from_keys(teacher="t", method="harp", rate_gamma=0.1, score_lr=0.02)
    assert cfg.options == HarpOptions(rate_gamma=0.1, score_lr=0.02)


def _cfg(run, **kw):
    base = dict(teacher=str(run), method="harp", adversary="none", epochs=2, finetune_epochs=1)
    return CompressConfig(**{**base, "batch_size": 128, "lr": 1e-2, **kw})


def test_harp_end_to_end_meets_the_sparsity_exactly(tiny_run, tmp_path):
    m = compress_run(_cfg(tiny_run, sparsity=0.8), tmp_path / "u", eval_attacks=("fgsm",))
    assert m["method"] == "harp"
    rep = m["sparsity"]
    assert rep["zeros"] == round(0.8 * rep["prunable"])
    harp = m["notes"]["harp"]
    assert len(harp["epochs"]) == 2 and len(harp["learned_rates"]) == len(rep["layers"])
    assert [h["phase"] for h in m["history"]] == ["harp", "harp", "finetune"]
    assert "harp_rate_loss" in m["history"][0]
    assert m["clean_acc"] > 0.3


def test_structured_harp_has_no_more_macs_than_the_uniform_student(tiny_run, tmp_path):
    kw = dict(structured=True, sparsity=0.5, finetune_epochs=0)
    m = compress_run(_cfg(tiny_run, **kw), tmp_path / "s", eval_attacks=("fgsm",))
    uniform = compress_run(
        _cfg(tiny_run, method="magnitude", **kw), tmp_path / "m", eval_attacks=("fgsm",)
    )
    assert read_json(tmp_path / "s" / "model.json")["structure"] == "shrunk"
    assert m["macs"]["dense"] <= uniform["macs"]["dense"] < m["teacher"]["macs"]
    model, _ = load_model(tmp_path / "s")
    assert count_params(model) == m["params"]


@pytest.mark.parametrize("name,shape", [("lenet5", (1, 8, 8)), ("resnet8", (3, 32, 32))])
def test_the_rate_terms_macs_are_the_mac_counters_on_the_shrunk_student(name, shape):
    """Structured: the rate term's kept MACs (``sum D k_in k_out``, coupled residual channels
    included) equal count_macs of the student with those channels removed."""
    import copy

    from robustedge.compress.method_harp import macs_terms
    from robustedge.compress.structured import channel_groups, channel_keep_masks, shrink
    from robustedge.models import ModelSpec, build_model, count_macs

    torch.manual_seed(0)
    model = build_model(ModelSpec(name, shape, 10))
    groups = channel_groups(model, shape)
    state = HarpState(
        [torch.ones(g.channels) for g in groups], 0.5, HarpOptions(), True,
        macs_terms(model, shape, groups),
    )  # fmt: skip
    student = copy.deepcopy(model)
    sg = channel_groups(student, shape)
    shrink(student, shape, sg, channel_keep_masks(sg, 0.5, "layer"))
    ratio = count_macs(student, shape)["dense"] / count_macs(model, shape)["dense"]
    assert state.target_kept() == pytest.approx(ratio, rel=1e-12) and ratio < 0.6
    assert float(state.kept(torch.ones(len(groups)))) == pytest.approx(1.0)
