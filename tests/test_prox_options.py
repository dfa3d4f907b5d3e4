"""prox options end to end on a tiny model: lazy prox (dual averaging), warm start, KD on
clean inputs, ERK budgets; each must still land on the target sparsity exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
    cfg = CompressConfig(teacher=str(teacher), method="prox", sparsity=0.8, **FAST, **kw)
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
    if cfg.lazy_prox:  # one weight-sized residual of extra state
        assert phases["prox"]["method_state"] == 4 * total
    else:
        assert phases["prox"]["method_state"] == 0


def test_warm_start_trains_dense_first(teacher, tmp_path):
    """With ramp_start 0.5 nothing is pruned in the first half of the pruning phase."""
    from robustedge.compress import PRUNERS, PruneContext, make_kd_task_loss
    from robustedge.compress.common import steps_per_epoch
    from robustedge.compress.pipeline import build_student, load_teacher, make_adversary
    from robustedge.compress.targets import global_sparsity, prunable_params
    from robustedge.training import epoch_batches

    cfg = CompressConfig(teacher=str(teacher), sparsity=0.8, ramp_start=0.5, **FAST)
    t, t_spec, _, data = load_teacher(cfg)
    _, student = build_student(cfg, t, t_spec, data)
    xt, yt = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    params = prunable_params(student)
    seen = []
    ctx = PruneContext(
        model=student,
        cfg=cfg,
        batches=epoch_batches(xt, yt, cfg.batch_size, 0),
        steps_per_epoch=steps_per_epoch(len(xt), cfg.batch_size),
        adversary=make_adversary(cfg, data),
        task_loss=make_kd_task_loss(t, cfg.kd_alpha, cfg.kd_temp),
        params=params,
        input_shape=data.input_shape,
        on_epoch_end=lambda e, r: seen.append(global_sparsity(params.values())),
    )
    PRUNERS.get("prox")(ctx)
    assert seen[0] == 0.0  # epoch 1 of 2: still dense
    assert seen[1] == pytest.approx(0.8, abs=0.01)
