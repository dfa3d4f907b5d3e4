"""prox options end to end on a tiny model: lazy prox (dual averaging), warm start, KD on
clean inputs, ERK budgets; each must still land on the target sparsity exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _prune_ctx import prune_ctx as _prox_ctx
from robustedge.compress import CompressConfig, compress_run, read_masks
from robustedge.models import load_model
from robustedge.training.config import TrainConfig
from robustedge.training.run import train_run

FAST = dict(adversary="fgsm", eps=0.1, epochs=2, finetune_epochs=1, batch_size=128)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    train_run(TrainConfig(model="tiny", adversary="none", epochs=3, lr=1e-2), out)
    return out


@pytest.mark.parametrize(
    "kw",
    [
        {"lazy_prox": True, "penalty": "reweighted"},
        {},  # the default: lazy prox, l0, KD at T=1 on the clean input
        {"ramp_start": 0.5, "ramp_end": 1.0, "lazy_prox": False},
        {"kd_target": "adv", "kd_temp": 4.0, "lazy_prox": False, "penalty": "reweighted"},
        {"scope": "erk"},
    ],
    ids=["lazy-reweighted", "default", "greedy-warm-start", "paper1", "erk"],
)
def test_prox_options_meet_sparsity(teacher, tmp_path, kw):
    cfg = CompressConfig.from_keys(teacher=str(teacher), method="prox", sparsity=0.8, **FAST, **kw)
    m = compress_run(cfg, tmp_path / "p", eval_attacks=("fgsm",))
    masks = read_masks(tmp_path / "p")
    total = sum(v.numel() for v in masks.values())
    assert sum(int((~v).sum()) for v in masks.values()) == round(0.8 * total)
    model, _ = load_model(tmp_path / "p")
    state = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(state[name][~mask] == 0)
    assert m["notes"]["prox_sparsity"] == pytest.approx(0.8, abs=0.01)
    phases = m["memory"]["phases"]
    if cfg.options.lazy_prox:  # one weight-sized residual of extra state
        assert phases["prox"]["method_state"] == 4 * total
    else:
        assert phases["prox"]["method_state"] == 0


def test_warm_start_trains_dense_first(teacher):
    """With ramp_start 0.5 nothing is pruned in the first half of the pruning phase."""
    from robustedge.compress import PRUNERS
    from robustedge.compress.targets import global_sparsity

    cfg = CompressConfig.from_keys(teacher=str(teacher), sparsity=0.8, ramp_start=0.5, **FAST)
    ctx = _prox_ctx(teacher, cfg)
    seen = []
    ctx.on_epoch_end = lambda e, r: seen.append(global_sparsity(ctx.params.values()))
    PRUNERS.get("prox")(ctx)
    assert seen[0] == 0.0  # epoch 1 of 2: still dense
    assert seen[1] == pytest.approx(0.8, abs=0.01)


def _outside_share(params, sparsity):
    """Share of the weights' squared norm outside their global top-k at ``sparsity``."""
    from robustedge.compress.prox import topk_masks

    masks = topk_masks({n: p.detach().abs() for n, p in params.items()}, sparsity, "global")
    out = sum(float(p.detach()[~masks[n]].pow(2).sum()) for n, p in params.items())
    return out / sum(float(p.detach().pow(2).sum()) for p in params.values())


def test_admm_warm_start_pulls_the_weights_outside_the_target_mask(teacher):
    """With admm_warm the dense first half carries ADMM's penalty: at its end less of the
    weights' energy lies outside the target's top-k than without it (same seed and data);
    the warm epoch's record (only) carries ADMM's rho and residual."""
    from robustedge.compress import PRUNERS

    shares, records = {}, {}
    for warm in (False, True):
        cfg = CompressConfig.from_keys(
            teacher=str(teacher),
            sparsity=0.8,
            ramp_start=0.5,
            admm_warm=warm,
            admm_rho=1.0,
            **FAST,
        )
        ctx = _prox_ctx(teacher, cfg)
        recs, seen = [], []

        def epoch_end(e, r, ctx=ctx, recs=recs, seen=seen):
            recs.append(dict(r))
            seen.append(_outside_share(ctx.params, 0.8))

        ctx.on_epoch_end = epoch_end
        PRUNERS.get("prox")(ctx)
        shares[warm], records[warm] = seen, recs
    assert shares[True][0] < 0.9 * shares[False][0]  # the pull worked during the warm start
    assert "rho" in records[True][0] and "admm_residual" in records[True][0]
    assert "rho" not in records[True][1] and "rho" not in records[False][0]


def test_admm_warm_needs_a_dense_warm_start_and_prox_pull_is_not_negative():
    with pytest.raises(ValueError, match="admm_warm needs ramp_start > 0"):
        CompressConfig.from_keys(teacher="t", admm_warm=True)
    with pytest.raises(ValueError, match="prox_pull must be >= 0"):
        CompressConfig.from_keys(teacher="t", prox_pull=-0.1)


def test_prox_pull_adds_rho_times_the_residual_to_the_gradient_and_is_removed_after(teacher):
    """The pull's hook adds ``rho * residual`` (zero on kept weights) to each gradient during
    the pruning phase; after it no hook is left to touch the fine-tune's gradients."""
    from robustedge.compress import PRUNERS
    from robustedge.compress.method_prox import _pull_hooks

    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    r = torch.tensor([0.0, 0.5, -1.0])
    hooks = _pull_hooks({"w": p}, {"w": r}, 0.1)
    (2 * p).sum().backward()
    assert torch.allclose(p.grad, torch.tensor([2.0, 2.05, 1.9]))
    for h in hooks:
        h.remove()
    assert _pull_hooks({"w": p}, {"w": r}, 0.0) == [] and _pull_hooks({"w": p}, {}, 1.0) == []
    cfg = CompressConfig.from_keys(teacher=str(teacher), sparsity=0.8, prox_pull=0.5, **FAST)
    ctx = _prox_ctx(teacher, cfg)
    PRUNERS.get("prox")(ctx)
    assert all(not prm._backward_hooks for prm in ctx.params.values())


@pytest.mark.parametrize("method", ["prox", "admm", "gmp"])
def test_kd_on_the_clean_input_applies_to_every_method_that_distils(teacher, method):
    """kd_target="clean" with kd_alpha > 0 makes the teacher answer on the clean batch for
    any method (ADMM + KD was measured with it); without distillation nothing is wrapped."""
    from robustedge.compress.distill import RememberClean
    from robustedge.compress.pipeline import (
        build_student,
        load_teacher,
        make_adversary,
        make_context,
    )

    for alpha, wrapped in ((0.5, True), (0.0, False)):
        cfg = CompressConfig(teacher=str(teacher), method=method, kd_alpha=alpha, **FAST)
        t, t_spec, _, data = load_teacher(cfg)
        _, student = build_student(cfg, t, t_spec, data)
        ctx = make_context(cfg, student, t, make_adversary(cfg, data), data, "cpu")
        assert isinstance(ctx.adversary, RememberClean) is wrapped
        assert ctx.task_loss.target == ("clean" if wrapped else "adv")
