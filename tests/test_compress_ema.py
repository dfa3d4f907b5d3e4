"""EMA of the weights during the masked fine-tune (``CompressConfig.ema_decay``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from robustedge.compress import CompressConfig, compress_run, read_masks
from robustedge.compress.ema import WeightEMA
from robustedge.models import load_model
from robustedge.training.config import TrainConfig
from robustedge.training.run import train_run


def test_weight_ema_exact_average_with_warmup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        net[0].weight[0, 0] = 0.0  # a pruned weight
    ema = WeightEMA(net, decay=0.5)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    want = {k: v.clone().double() for k, v in start.items() if v.is_floating_point()}
    for t in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0 + t)
            net[0].weight[0, 0] = 0.0  # the mask re-applied after the step
        d = min(0.5, (1 + t) / (10 + t))
        assert ema.rate() == pytest.approx(d)
        ema.update(net)
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                want[k] = d * want[k] + (1 - d) * v.double()
    live = {k: v.clone() for k, v in net.state_dict().items()}
    ema.copy_to(net)
    for k, v in net.state_dict().items():
        if k in want:
            assert torch.allclose(v.double(), want[k], atol=1e-6), k
            assert not torch.equal(v, live[k]) or torch.equal(start[k], live[k]), k
    assert net[0].weight[0, 0] == 0.0  # pruned stays exactly zero in the average
    assert int(net[1].num_batches_tracked) == int(live["1.num_batches_tracked"])
    assert len(ema.tensors()) == len(want) + 1 and float(ema.tensors()[-1]) == 4.0


@pytest.mark.parametrize("decay", [-0.1, 1.0, float("nan")])
def test_config_rejects_bad_decay(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        CompressConfig(teacher="t", ema_decay=decay)
    with pytest.raises(ValueError, match="EMA decay"):
        WeightEMA(nn.Linear(2, 2), decay if decay == decay else 0.0)


def test_default_is_off():
    assert CompressConfig(teacher="t").ema_decay == 0.0


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    train_run(TrainConfig(model="tiny", adversary="none", epochs=2, lr=1e-2), out)
    return out


def test_compress_with_ema_keeps_masks_and_averages(teacher, tmp_path):
    kw = dict(
        teacher=str(teacher),
        adversary="fgsm",
        eps=0.1,
        epochs=1,
        finetune_epochs=2,
        batch_size=128,
        sparsity=0.7,
    )
    plain = compress_run(CompressConfig(**kw), tmp_path / "plain", eval_attacks=())
    ema = compress_run(CompressConfig(**kw, ema_decay=0.9), tmp_path / "ema", eval_attacks=())
    mp, me = read_masks(tmp_path / "plain"), read_masks(tmp_path / "ema")
    assert mp.keys() == me.keys() and all(torch.equal(mp[k], me[k]) for k in mp)
    wp = dict(load_model(tmp_path / "plain")[0].named_parameters())
    we = dict(load_model(tmp_path / "ema")[0].named_parameters())
    for name, mask in me.items():
        assert torch.all(we[name][~mask] == 0)  # pruned weights stayed exactly zero
    assert any(not torch.equal(wp[k], we[k]) for k in wp)  # the average replaced the weights
    assert ema["sparsity"]["global"] == plain["sparsity"]["global"]
    # the average is one more copy of the model (plus its step counter) in the fine-tune state
    state = load_model(tmp_path / "ema")[0].state_dict().values()
    extra = sum(v.numel() * v.element_size() for v in state if v.is_floating_point()) + 8
    fp, fe = plain["memory"]["phases"]["finetune"], ema["memory"]["phases"]["finetune"]
    assert fe["method_state"] - fp["method_state"] == extra
