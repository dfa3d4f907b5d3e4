"""Channel groups, physical channel removal (Torch-Pruning) and shrunk checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from robustedge.compress import CompressConfig, Scope, compress_run
from robustedge.compress.prox import keep_count
from robustedge.compress.structured import (
    channel_groups,
    channel_keep_masks,
    channel_scores,
    channel_sparsity,
    group_prox,
    remove_channels,
    zero_channels,
)
from robustedge.io import read_json
from robustedge.models import (
    ModelSpec,
    build_model,
    count_macs,
    count_params,
    load_model,
    save_model,
)
from robustedge.models.resize import resize_to_state

CASES = [
    ("tiny", (1, 8, 8)),
    ("lenet5", (1, 8, 8)),
    ("resnet20", (3, 8, 8)),
    ("resnet8", (3, 8, 8)),  # biased convs, 1x1 conv shortcuts without BatchNorm
]


def _model(name, shape):
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, shape, 10))
    for m in model.modules():  # non-trivial BN statistics and biases
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.bias, -1, 1)
    return model.eval()


@pytest.mark.parametrize("name,shape", CASES)
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_removal_keeps_outputs_and_shrinks(name, shape, scope):
    model = _model(name, shape)
    groups = channel_groups(model, shape)
    assert groups
    keep = channel_keep_masks(groups, 0.5, scope)
    zero_channels(groups, keep)
    assert all(int(k.sum()) >= 1 for k in keep.values())
    x = torch.rand(8, *shape)
    with torch.no_grad():
        before = model(x)
    params, macs = count_params(model), count_macs(model, shape)["dense"]
    removed = remove_channels(model, shape, groups, keep)
    assert removed == sum(int((~k).sum()) for k in keep.values())
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(before, after, atol=1e-5)
    assert count_params(model) < params and count_macs(model, shape)["dense"] < macs


def test_bn_bias_is_part_of_the_group():
    """A zero filter alone would still emit BN's beta: the group zeroes gamma and beta too."""
    model = _model("tiny", (1, 8, 8))
    (group,) = channel_groups(model, (1, 8, 8))
    bn = model[4]
    assert any(p is bn.bias for p, _ in group.slices) and any(
        p is bn.weight for p, _ in group.slices
    )
    keep = torch.ones(group.channels, dtype=torch.bool)
    keep[:3] = False
    zero_channels([group], {group.root: keep})
    assert torch.all(bn.bias[:3] == 0) and torch.all(model[3].weight[:3] == 0)


def test_group_prox_reaches_zero_channels():
    model = _model("lenet5", (1, 8, 8))
    groups = channel_groups(model, (1, 8, 8))
    assert channel_sparsity(groups) == 0
    group_prox(groups, 0.05)
    assert 0 < channel_sparsity(groups) <= 1


def test_shrunk_model_saves_and_reloads(tmp_path):
    shape = (1, 8, 8)
    model = _model("lenet5", shape)
    groups = channel_groups(model, shape)
    keep = channel_keep_masks(groups, 0.7, "layer")
    zero_channels(groups, keep)
    remove_channels(model, shape, groups, keep)
    spec = ModelSpec("lenet5", shape, 10)
    save_model(tmp_path, model, spec, extra={"structure": "shrunk"})
    loaded, _ = load_model(tmp_path)
    x = torch.rand(4, *shape)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded.eval()(x), atol=1e-6)
    assert count_params(loaded) == count_params(model) < count_params(build_model(spec))


def test_resize_to_state_handles_depthwise():
    dw = nn.Sequential(
        nn.Conv2d(8, 8, 3, groups=8, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)
    )
    small = nn.Sequential(
        nn.Conv2d(5, 5, 3, groups=5, padding=1), nn.BatchNorm2d(5), nn.Conv2d(5, 4, 1)
    )
    resize_to_state(dw, small.state_dict())
    dw.load_state_dict(small.state_dict())
    assert dw[0].groups == 5 and dw[0].in_channels == 5 and dw[1].num_features == 5


def test_structured_ranks_channels_per_layer_by_default():
    assert CompressConfig(teacher="t", structured=True).scope is Scope.LAYER
    assert CompressConfig(teacher="t").scope is Scope.GLOBAL  # unstructured: global
    assert CompressConfig(teacher="t", structured=True, scope="global").scope is Scope.GLOBAL
    assert CompressConfig(teacher="t", structured=True).to_dict()["scope"] == "layer"
    model = _model("resnet8", (3, 8, 8))
    groups = channel_groups(model, (3, 8, 8))
    keep = channel_keep_masks(groups, 0.75)  # default scope: every layer keeps a quarter
    for g in groups:
        assert int(keep[g.root].sum()) == max(1, keep_count(g.channels, 0.75))


def test_l1_score_ranks_by_kernel_l1_not_rms():
    """Channel 0: many small weights (large L1, small L2); channel 1: one large weight."""
    model = _model("tiny", (1, 8, 8))
    conv, bn = model[3], model[4]
    with torch.no_grad():
        conv.weight.fill_(1e-3)
        conv.weight[0].fill_(0.1)  # L1 7.2, L2 0.85
        conv.weight[1, 0, 0, 0] = 2.0  # L1 ~2.07, L2 2.0
        bn.weight.fill_(0.01)
        bn.bias.fill_(0.01)
    groups = channel_groups(model, (1, 8, 8))
    l1 = channel_scores(groups, "l1")[groups[0].root]
    assert int(l1.argmax()) == 0 and float(l1[0]) == pytest.approx(0.1, rel=1e-5)  # mean |w|
    sparsity = 1 - 1 / groups[0].channels
    by_l1 = channel_keep_masks(groups, sparsity, score="l1")[groups[0].root]
    by_rms = channel_keep_masks(groups, sparsity, score="rms")[groups[0].root]
    assert by_l1.nonzero().flatten().tolist() == [0]
    assert by_rms.nonzero().flatten().tolist() == [1]
    with pytest.raises(ValueError, match="rms, l1"):
        channel_scores(groups, "l2")


def test_structured_magnitude_shrinks_by_l1_per_layer(tiny_run, tmp_path):
    out = tmp_path / "l1"
    cfg = CompressConfig(
        teacher=str(tiny_run),
        method="magnitude",
        structured=True,
        sparsity=0.5,
        adversary="none",
        epochs=1,
        finetune_epochs=0,
        batch_size=128,
        lr=1e-2,
    )
    m = compress_run(cfg, out, eval_attacks=("fgsm",))
    assert read_json(out / "model.json")["structure"] == "shrunk"
    assert m["notes"]["channel_sparsity"] == 0.5 and m["scope"] == "layer"
    assert len(m["history"]) == 1 and m["history"][0]["phase"] == "finetune"
    model, _ = load_model(out)
    assert count_params(model) == m["params"] < m["teacher"]["params"]
    assert m["macs"]["dense"] < m["teacher"]["macs"]
    assert m["clean_acc"] > 0.5  # one fine-tune epoch after halving the tiny teacher's conv
