"""prox's searched per-layer budgets (``layer_budget`` fisher / taylor): the saliencies and the
per-layer masks against values computed by hand, the option's refusals, and a run that lands
every layer on its searched budget and the total on the target."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from robustedge.compress import CompressConfig, compress_run, read_masks
from robustedge.compress.saliency import budget_masks, round_sparsities, saliencies


def _linear():
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    return lin


def test_saliencies_are_obds_fisher_term_and_the_first_order_taylor_term_by_hand():
    """W = [[1, 2], [3, 4]], x = (1, 2) twice, labels 0 and 1 (eps 0: clean images).
    Logits (5, 11), so p0 = 1 / (1 + e^6) and the logit gradients are (p0 - 1, 1 - p0) for
    label 0 and (p0, -p0) for label 1; each weight's gradient is that times x_j."""
    lin = _linear()
    params = {"weight": lin.weight}
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    probe = [(x, torch.tensor([0, 1]))]
    p0 = 1.0 / (1.0 + math.exp(6.0))
    dz = [(p0 - 1.0, 1.0 - p0), (p0, -p0)]  # per image, per output row
    w = [[1.0, 2.0], [3.0, 4.0]]
    xj = [1.0, 2.0]
    fisher = saliencies(lin, params, probe, eps=0.0, steps=1, kind="fisher")["weight"]
    taylor = saliencies(lin, params, probe, eps=0.0, steps=1, kind="taylor")["weight"]
    for r in range(2):
        for c in range(2):
            g = [dz[i][r] * xj[c] for i in range(2)]
            want_f = 0.5 * (g[0] ** 2 + g[1] ** 2) / 2 * w[r][c] ** 2
            want_t = abs((g[0] + g[1]) / 2 * w[r][c])
            assert float(fisher[r, c]) == pytest.approx(want_f, rel=1e-5)
            assert float(taylor[r, c]) == pytest.approx(want_t, rel=1e-5)
    assert lin.weight.grad is None  # the probe leaves no gradient behind


def test_budget_masks_cut_each_layers_share_of_the_ramp_by_largest_remainders():
    """Budgets a: 0.5 (4 weights), b: 0.9 (10 weights) at half the ramp: a wants 1.0 cut,
    b 4.5; the total round(5.5) = 6 gives the extra cut to b (remainder 0.5 against 0).
    The cuts fall on the smallest magnitudes of each layer."""
    scores = {"a": torch.tensor([4.0, 1.0, 3.0, 2.0]), "b": torch.arange(10.0, 0.0, -1.0)}
    masks = budget_masks(scores, {"a": 0.5, "b": 0.9}, share=0.5)
    assert masks["a"].tolist() == [True, False, True, True]
    assert masks["b"].tolist() == [True] * 5 + [False] * 5
    full = budget_masks(scores, {"a": 0.5, "b": 0.9}, share=1.0)
    assert [int((~m).sum()) for m in full.values()] == [2, 9]
    none = budget_masks(scores, {"a": 0.5, "b": 0.9}, share=0.0)
    assert all(bool(m.all()) for m in none.values())


def test_the_search_rounds_keep_the_same_fraction_of_the_survivors_each():
    """Target 0.75 in 2 rounds: density 1 -> 0.5 -> 0.25 (each round keeps half of what is
    left); 0.999 in 3 rounds: densities 0.1, 0.01, 0.001."""
    assert round_sparsities(0.75, 2) == pytest.approx([0.5, 0.75])
    assert round_sparsities(0.999, 3) == pytest.approx([0.9, 0.99, 0.999])
    assert round_sparsities(0.9, 1) == pytest.approx([0.9])


@pytest.mark.parametrize(
    "kw, why",
    [
        ({"structured": True}, "unstructured"),
        ({"scope": "layer"}, "scope global"),
    ],
)
def test_a_searched_budget_is_refused_where_something_else_sets_the_shares(kw, why):
    with pytest.raises(ValueError, match=why):
        CompressConfig.from_keys(teacher="t", layer_budget="fisher", **kw)
    with pytest.raises(
        ValueError, match="layer_budget must be one of ranked, fisher, taylor, harp"
    ):
        CompressConfig.from_keys(teacher="t", layer_budget="hessian")


# a short budget run on the tiny model: every layer pruned (more than one to share among)
BUDGET_RUN = dict(
    sparsity=0.8,
    include_first=True,
    include_last=True,
    adversary="fgsm",
    eps=0.1,
    epochs=2,
    finetune_epochs=1,
    batch_size=128,
)


def test_a_fisher_budget_run_keeps_every_layer_at_its_searched_share(tiny_run, tmp_path):
    """The run records the budgets it searched (the weights they cut are the target's); the final
    masks cut each layer to its budget (to one weight) and the total to the target exactly."""
    cfg = CompressConfig.from_keys(teacher=str(tiny_run), layer_budget="fisher", **BUDGET_RUN)
    m = compress_run(cfg, tmp_path / "s", eval_attacks=())
    assert m["notes"]["layer_budget"] == "fisher"  # what ran, recorded
    budgets = m["notes"]["layer_budgets"]
    masks = read_masks(tmp_path / "s")
    sizes = {n: v.numel() for n, v in masks.items()}
    assert set(budgets) == set(masks)
    total = sum(sizes.values())
    assert sum(budgets[n] * sizes[n] for n in sizes) == pytest.approx(round(0.8 * total))
    assert sum(int((~v).sum()) for v in masks.values()) == round(0.8 * total)
    for n, v in masks.items():
        assert abs(int((~v).sum()) - budgets[n] * sizes[n]) <= 1
    assert len({round(b, 3) for b in budgets.values()}) > 1  # not one fraction for all
    assert m["notes"]["sensitivity"] == {"saliency": "fisher", "probe_images": 512, "rounds": 8}


def test_the_search_ranks_the_survivors_of_the_pruned_model_again_in_every_round():
    """search's budgets are those of pruning in rounds by hand: each round the saliencies of
    the model pruned so far, ranked among the surviving weights only; here they differ from
    one-shot pruning (the test would not see a search that skipped the re-ranking). The
    weights are restored afterwards."""
    from robustedge.compress.prox import topk_masks
    from robustedge.compress.saliency import search

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    params = {"0.weight": model[0].weight, "2.weight": model[2].weight}
    batches = [(torch.randn(32, 4), torch.randint(0, 3, (32,)))]
    before = {n: p.detach().clone() for n, p in params.items()}

    def by_hand(rounds):
        masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
        for s in round_sparsities(0.9, rounds):
            sal = saliencies(model, params, batches, 0.0, 1, "fisher")
            alive = {n: torch.where(masks[n], v, torch.full_like(v, -1.0)) for n, v in sal.items()}
            masks = topk_masks(alive, s, "global")
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(before[n] * masks[n])
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(before[n])
        return {n: 1.0 - float(m.float().mean()) for n, m in masks.items()}

    got, _ = search(model, params, batches, torch.device("cpu"), 0.9, 0.0, 1, "fisher", rounds=3)
    assert got == pytest.approx(by_hand(3))
    assert by_hand(3) != pytest.approx(by_hand(1))
    for n, p in params.items():
        assert torch.equal(p.detach(), before[n])


def test_a_resumed_step_keeps_its_searched_budgets_and_does_not_search_again():
    """The budgets are part of prox's checkpointed state: a step loaded from it projects at
    those shares from its first ramp step on, and never calls the search (a second search on
    the half-trained model would give other budgets)."""
    from robustedge.compress.method_prox import ProxStep

    cfg = CompressConfig.from_keys(teacher="t", sparsity=0.5, layer_budget="fisher")
    lin = _linear()
    params = {"weight": lin.weight}
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    first = ProxStep(cfg, params, opt, start=0, ramp=1)
    calls = []
    first.search = lambda model: calls.append(1) or ({"weight": 0.5}, {"saliency": "fisher"})
    first(lin)
    assert calls == [1] and first.budget_state() == {
        "budgets": {"weight": 0.5},
        "report": {"saliency": "fisher"},
    }
    again = ProxStep(cfg, params, opt, start=0, ramp=1)
    again.search = lambda model: pytest.fail("searched again after a resume")
    again.load_budgets(first.budget_state())
    again(lin)
    assert lin.weight.detach().flatten().tolist() == [0.0, 0.0, 3.0, 4.0]  # the 2 smallest cut


def test_harp_rates_share_exactly_the_targets_kept_weights_by_hand():
    """Rates a 0.5 (10 weights), b 0.1 (100 weights) at sparsity 0.9: 110 - round(99) = 11
    kept, shared 5 : 10 (k n): 3.67 and 7.33, floors 3 and 7, the one left to a (remainder
    0.67 against 0.33): a keeps 4 (sparsity 0.6), b 7 (0.93)."""
    from robustedge.compress.learned_budget import budgets_from_rates

    got = budgets_from_rates({"a": 0.5, "b": 0.1}, {"a": 10, "b": 100}, 0.9)
    assert got == pytest.approx({"a": 0.6, "b": 0.93})


HARP_BUDGET = dict(layer_budget="harp", **BUDGET_RUN)


def test_a_harp_budget_run_trains_the_rates_first_then_keeps_each_layer_at_its_share(
    tiny_run, tmp_path
):
    """budget_epochs 1 of epochs 2: one epoch of HARP's rate phase (its own phase in the
    history and the memory ledger), then prox; the final masks cut each layer to the budgets
    the learned rates give and the total to the target exactly."""
    from robustedge.compress.learned_budget import PHASE, budgets_from_rates

    cfg = CompressConfig.from_keys(teacher=str(tiny_run), budget_epochs=1, **HARP_BUDGET)
    m = compress_run(cfg, tmp_path / "s", eval_attacks=())
    assert [r["phase"] for r in m["history"]] == [PHASE, "prox", "prox", "finetune"]
    assert PHASE in m["memory"]["phases"]
    notes = m["notes"]
    assert notes["layer_budget"] == "harp"
    report = notes["sensitivity"]
    assert report["saliency"] == "harp" and report["epochs"] == 1
    assert len(report["kept_per_epoch"]) == len(report["rates_per_epoch"]) == 1
    masks = read_masks(tmp_path / "s")
    sizes = {n: v.numel() for n, v in masks.items()}
    assert len(sizes) == 3
    want = budgets_from_rates(report["learned_rates"], sizes, 0.8)  # rates rounded to 1e-6
    budgets = notes["layer_budgets"]
    for n, v in masks.items():
        assert abs(budgets[n] - want[n]) * sizes[n] <= 1
        assert abs(int((~v).sum()) - budgets[n] * sizes[n]) <= 1
    assert sum(int((~v).sum()) for v in masks.values()) == round(0.8 * sum(sizes.values()))


def test_the_harp_rate_phase_leaves_the_student_as_it_was_but_for_the_budgets(tiny_run):
    """Weights frozen, the scores and rates in parametrizations, BatchNorm trained in the
    phase: afterwards every tensor of the student (BatchNorm statistics included) is the one
    it started with, no parametrization is left, and ctx.params are the model's weights."""
    from _prune_ctx import prune_ctx
    from robustedge.compress.learned_budget import PHASE, learned_budgets

    cfg = CompressConfig.from_keys(teacher=str(tiny_run), **HARP_BUDGET)
    ctx = prune_ctx(tiny_run, cfg)
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    budgets, report = learned_budgets(ctx, 1)
    after = ctx.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert [r["phase"] for r in ctx.history] == [PHASE]
    live = dict(ctx.model.named_parameters())
    assert all(ctx.params[n] is live[n] for n in ctx.params)
    assert set(budgets) == set(ctx.params) and report["epochs"] == 1
    assert report["rates_per_epoch"][0] != [0.1] * 3  # the rates moved from rate_init


def test_harp_budgets_are_refused_with_weight_perturbation():
    with pytest.raises(ValueError, match="no awp_gamma"):
        CompressConfig.from_keys(teacher="t", layer_budget="harp", awp_gamma=0.01)
    with pytest.raises(ValueError, match="budget_epochs must be >= 0"):
        CompressConfig.from_keys(teacher="t", layer_budget="harp", budget_epochs=-1)
