"""`--method gmp`: TF-MOT's polynomial sparsity schedule and gradual magnitude pruning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustedge.compress import PRUNERS, CompressConfig, compress_run, read_masks
from robustedge.compress.schedule import polynomial_sparsity, should_prune
from robustedge.models import load_model
from robustedge.training.config import TrainConfig
from robustedge.training.run import train_run

FAST = dict(eps=0.1, epochs=2, finetune_epochs=1, batch_size=128)


def test_polynomial_schedule_matches_tfmot():
    # tfmot PolynomialDecay: final + (initial - final) * (1 - (t - begin) / (end - begin))^3
    s = lambda t: polynomial_sparsity(t, 0.5, 0.9, 100, 300)  # noqa: E731
    assert s(0) == 0.5 and s(100) == 0.5
    assert s(200) == pytest.approx(0.9 - 0.4 * 0.5**3)
    assert s(250) == pytest.approx(0.9 - 0.4 * 0.25**3)
    assert s(300) == pytest.approx(0.9) and s(10_000) == pytest.approx(0.9)
    values = [s(t) for t in range(100, 301, 10)]
    assert values == sorted(values)  # monotone
    assert polynomial_sparsity(50, 0.0, 0.8, 0, 100, power=1.0) == pytest.approx(0.4)
    assert polynomial_sparsity(5, 0.1, 0.8, 5, 5) == 0.8  # degenerate window: final at begin


def test_pruning_turns():
    turns = [t for t in range(0, 40) if should_prune(t, 3, 30, 10)]
    assert turns == [3, 13, 23]
    assert should_prune(1003, 3, -1, 10)  # end_step -1: no end
    assert not should_prune(2, 3, -1, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gmp_initial_sparsity": 0.95},  # above the final sparsity (0.9)
        {"gmp_frequency": 0},
        {"gmp_begin_step": -1},
        {"gmp_begin_step": 10, "gmp_end_step": 5},
        {"gmp_power": 0.0},
    ],
)
def test_config_rejects_bad_gmp_settings(kwargs):
    with pytest.raises(ValueError, match="gmp"):
        CompressConfig.from_keys(teacher="t", method="gmp", **kwargs)


def test_gmp_defaults():
    cfg = CompressConfig(teacher="t", method="gmp")
    assert "gmp" in PRUNERS.names()
    assert cfg.adversary == "pgd" and cfg.kd_alpha == 0.0  # a baseline: no distillation
    opts = cfg.options
    assert (opts.gmp_initial_sparsity, opts.gmp_begin_step, opts.gmp_frequency) == (0.0, 0, 100)
    assert opts.gmp_end_step is None and opts.gmp_power == 3.0


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    train_run(TrainConfig(model="tiny", adversary="none", epochs=3, lr=1e-2), out)
    return out


@pytest.mark.parametrize(
    "adversary,scope", [("none", "layer"), ("fgsm", "global")], ids=["tfmot-plain", "adv"]
)
def test_gmp_meets_sparsity_and_follows_the_schedule(teacher, tmp_path, adversary, scope):
    cfg = CompressConfig.from_keys(
        teacher=str(teacher),
        method="gmp",
        sparsity=0.8,
        scope=scope,
        adversary=adversary,
        gmp_initial_sparsity=0.2,
        gmp_begin_step=2,
        gmp_end_step=16,
        gmp_frequency=4,
        **FAST,
    )
    m = compress_run(cfg, tmp_path / "g", eval_attacks=("fgsm",))
    masks = read_masks(tmp_path / "g")
    if scope == "layer":  # TF-MOT: every layer to the same sparsity
        for v in masks.values():
            assert int((~v).sum()) == round(0.8 * v.numel())
    total = sum(v.numel() for v in masks.values())
    assert sum(int((~v).sum()) for v in masks.values()) == round(0.8 * total)
    model, _ = load_model(tmp_path / "g")
    state = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(state[name][~mask] == 0)
    # mask updates at steps 2, 6, 10, 14 (frequency 4 from begin 2, up to end 16)
    updates = m["notes"]["gmp_updates"]
    assert [t for t, _ in updates] == [2, 6, 10, 14]
    for t, s in updates:
        assert s == pytest.approx(polynomial_sparsity(t, 0.2, 0.8, 2, 16))
    # the schedule itself took the weights to its last value before the final projection
    assert m["notes"]["gmp_sparsity"] == pytest.approx(updates[-1][1], abs=0.01)
    assert m["adversary"] == adversary and m["method"] == "gmp"
