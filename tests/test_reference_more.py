"""Hand-computed references, continued: the on-manifold attack's latent step and the flash /
MACs estimates.

On-manifold: a linear decoder and a linear classifier, so the latent gradient of the
cross-entropy is ``A^T W^T (softmax - onehot)``, computed here with numpy; the step, the
eta-box projection, the latent box clamp and the decoded image are compared with the attack's.
Flash: the int8 weight stream of a tiny model, byte by byte (per output channel: int8 weights
in OHWI order, int32 bias at scale * 0.01, float32 scale, int64 zero point), and the estimate
``(packed bytes + fixed part) / 1024`` with an identity codec. MACs: bias adds are not MACs, a
masked layer counts its density, a structurally shrunk layer counts its new widths.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
import torch.nn as nn

# ---------------------------------------------------------------- on-manifold

A = np.array([[0.2, -0.1], [0.1, 0.3], [-0.2, 0.1]])  # decoder: 2 latent -> 3 pixels
C = np.array([0.5, 0.4, 0.6])
W = np.array([[1.0, -2.0, 0.5], [-1.0, 1.0, 2.0]])  # classifier: 3 pixels -> 2 classes


class _LinearManifold:
    """decode(z, y) = A z + C as a 1 x 1 x 3 image; encode reads z off the first two pixels
    (pixel * 2 - 1), so the test chooses z through x."""

    def __init__(self, z_bounds):
        from robustedge.manifold.base import Manifold

        self.m = Manifold("hand", (1, 1, 3), 2, 2, z_bounds)
        self.z_bounds = z_bounds

    def encode(self, x, y):
        return x.reshape(len(x), -1)[:, :2] * 2 - 1

    def decode(self, z, y):
        a, c = torch.tensor(A, dtype=z.dtype), torch.tensor(C, dtype=z.dtype)
        return (z @ a.T + c).reshape(len(z), 1, 1, 3)

    def clamp_latent(self, z):
        return self.m.clamp_latent(z)

    def check_compatible(self, shape, classes, data_name=None):
        self.m.check_compatible(shape, classes, data_name)

    def to(self, device):
        return self


def _classifier():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 2, bias=False)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor(W))
    return net


def _latent_step_by_hand(z, y, alpha, eta, box):
    """One sign-gradient ascent step from zeta = 0: returns zeta and the decoded image."""
    x = A @ z + C
    logits = W @ x
    p = np.exp(logits - logits.max())
    p /= p.sum()
    p[y] -= 1.0  # d CE / d logits
    grad_z = A.T @ (W.T @ p)
    zeta = np.clip(alpha * np.sign(grad_z), -eta, eta)
    if box is not None:
        zeta = np.clip(z + zeta, *box) - z
    return zeta, np.clip(A @ (z + zeta) + C, 0.0, 1.0)


@pytest.mark.parametrize("box", [None, (-0.4, 0.65)])
def test_onmanifold_one_latent_step_by_hand(box):
    """One step, no random start: zeta = clip(alpha * sign(grad_z CE(W Dec(z + 0))), +-eta),
    then z + zeta clamped into the latent box; the output is Dec(z + zeta) clamped to [0, 1].
    Sample 0's first latent (-0.3) steps down towards the box's lower edge -0.4: the clamp bites."""
    from robustedge.attacks.on_manifold import OnManifold

    x = torch.tensor([[[[0.35, 0.25, 0.0]]], [[[0.4, 0.8, 0.0]]]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    alpha, eta = 0.25, 0.3
    man = _LinearManifold(box)
    atk = OnManifold(_classifier(), eta, man, steps=1, alpha=alpha, random_start=False)
    z, zeta, x_adv = atk.perturb_latent(x, y)
    for i in range(2):
        z_i = x[i].flatten()[:2].numpy() * 2 - 1
        want_zeta, want_x = _latent_step_by_hand(z_i, int(y[i]), alpha, eta, box)
        assert np.allclose(z[i].numpy(), z_i)
        assert np.allclose(zeta[i].numpy(), want_zeta, atol=1e-12), (i, zeta[i], want_zeta)
        assert np.allclose(x_adv[i].flatten().numpy(), want_x, atol=1e-12)
    assert float(zeta.abs().max()) <= eta + 1e-12
    if box is not None:  # the clamp bit: sample 0 moved down by less than alpha
        assert float(zeta[0, 0]) == pytest.approx(box[0] + 0.3)


def test_onmanifold_steps_accumulate_and_stay_in_the_eta_box():
    """Three steps of alpha 0.2 with eta 0.3: the latent moves by sign steps and is clipped at
    eta after the second (each coordinate's sign of gradient is recomputed every step)."""
    from robustedge.attacks.on_manifold import OnManifold

    x = torch.tensor([[[[0.4, 0.8, 0.0]]]], dtype=torch.float64)
    y = torch.tensor([1])
    z0 = x.flatten()[:2].numpy() * 2 - 1
    zeta = np.zeros(2)
    for _ in range(3):
        step, _ = _latent_step_by_hand(z0 + zeta, 1, 0.2, np.inf, None)
        zeta = np.clip(zeta + step, -0.3, 0.3)
    atk = OnManifold(_classifier(), 0.3, _LinearManifold(None), steps=3, alpha=0.2)
    atk.random_start = False
    _, got, _ = atk.perturb_latent(x, y)
    assert np.allclose(got[0].numpy(), zeta, atol=1e-12), (got, zeta)
    assert np.abs(zeta).max() == pytest.approx(0.3)


# ---------------------------------------------------------------- flash


def _row(q, bias_q, scale):
    """Bytes of one layer: int8 weights, then int32 biases, float32 scales, int64 zeros."""
    out = struct.pack(f"{len(q)}b", *q)
    out += struct.pack(f"<{len(bias_q)}i", *bias_q)
    out += struct.pack(f"<{len(scale)}f", *scale)
    return out + bytes(8 * len(scale))


def _tiny():
    """conv 2->1, kernel 1x2, no bias; linear 1 -> 2 with bias."""
    conv = nn.Conv2d(2, 1, (1, 2), bias=False)
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[0.5, -0.2]], [[0.1, 0.25]]]]))
        lin.weight.copy_(torch.tensor([[1.0], [-0.5]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2]))
    return nn.Sequential(conv, nn.Flatten(), lin)


def test_int8_stream_by_hand():
    """conv weight[o=0, i, h=0, w] = [[0.5, -0.2], [0.1, 0.25]]: OHWI order is (w0,i0) 0.5,
    (w0,i1) 0.1, (w1,i0) -0.2, (w1,i1) 0.25; scale 0.5/127; q = round(w/scale) =
    127, 25.4->25, -50.8->-51, 63.5->64 (half to even); no bias: int32 0. linear rows
    [1.0], [-0.5]: scales 1/127, 0.5/127, q 127, -127; bias q = round(b / (scale * 0.01)) =
    0.1*12700 = 1270, -0.2*25400 = -5080."""
    from robustedge.compress.budget.flash import int8_stream

    s0, s1, s2 = np.float32(0.5 / 127), np.float32(1 / 127), np.float32(0.5 / 127)
    want = _row([127, 25, -51, 64], [0], [s0]) + _row([127, -127], [1270, -5080], [s1, s2])
    got = int8_stream(_tiny())
    assert len(got) == 4 + 4 + 4 + 8 + 2 + 8 + 8 + 16 == 54
    assert got == want


def test_flash_estimate_by_hand_with_grouped_masked_and_shrunk_layers():
    """Identity codec: the estimate is (stream bytes + fixed) / 1024. Per output channel 16
    bytes besides the weights (int32 bias, float32 scale, int64 zero point). conv 1->2 3x3:
    2*9 weights; depthwise 2 groups 3x3: 2*9 (not 2*18); conv 2->2 3x3: 2*18; linear 2->2: 4.
    Masking weights keeps the length (their int8 are 0). Half the channels removed (first
    layer included): every conv keeps one channel, the depthwise one follows its input: 3*(9 +
    16) and the linear 1->2: 2 + 2*16."""
    from robustedge.compress.budget.flash import flash_estimate, int8_stream, stored_weights
    from robustedge.compress.budget.search import shrunk_copy

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2, 2, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.Conv2d(2, 2, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2, 2),
    ).eval()
    pc = 4 + 4 + 8
    dense = (18 + 2 * pc) + (18 + 2 * pc) + (36 + 2 * pc) + (4 + 2 * pc)
    assert len(int8_stream(net)) == dense == 204
    estimate = flash_estimate(100.0, lambda b: b)
    assert estimate(net) == pytest.approx((204 + 100) / 1024)
    with torch.no_grad():
        net[4].weight[0].zero_()  # a masked channel: its weights are zeros, still stored
    assert len(int8_stream(net)) == dense
    assert stored_weights(net) == 18 + 18 + 18 + 4
    small, widths = shrunk_copy(net, (1, 4, 4), 0.5, include_first=True)
    assert sorted(widths.values()) == [1, 1], widths
    assert len(int8_stream(small)) == 3 * (9 + pc) + (2 + 2 * pc) == 109
    assert estimate(small) == pytest.approx((109 + 100) / 1024)


# ---------------------------------------------------------------- MACs


def test_macs_by_hand_bias_mask_and_shrink():
    """conv 1->4 3x3 pad 1 with bias on 4x4: 4*16*9 = 576 (bias adds are not MACs); conv
    4->4 3x3 pad 1: 4*16*36 = 2304, half its weights masked: nonzero 1152; avgpool; linear
    4 -> 3: 12. Shrunk to half the middle conv's channels: 2*16*36 = 1152, linear 2*3 = 6."""
    from robustedge.compress.budget.search import shrunk_copy
    from robustedge.compress.targets import apply_masks, prunable_params
    from robustedge.models.macs import count_macs

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with torch.no_grad():
        for m in net:
            if hasattr(m, "weight"):
                m.weight.uniform_(0.1, 1.0)
    assert count_macs(net, (1, 4, 4)) == {"dense": 576 + 2304 + 12, "nonzero": 576 + 2304 + 12}
    params = prunable_params(net)
    assert list(params) == ["2.weight"]
    mask = torch.ones(4, 4, 3, 3, dtype=torch.bool)
    mask[:, :2] = False  # half of every filter's input channels
    apply_masks(params, {"2.weight": mask})
    assert count_macs(net, (1, 4, 4)) == {"dense": 576 + 2304 + 12, "nonzero": 576 + 1152 + 12}
    with torch.no_grad():
        net[2].weight.uniform_(0.1, 1.0)
        net[2].weight[:2].mul_(0.01)  # channels 0 and 1 are the smallest: removed
    small, widths = shrunk_copy(net, (1, 4, 4), 0.5)
    assert widths == {"2": 2} or list(widths.values()) == [2], widths
    assert small[2].weight.shape == (2, 4, 3, 3) and small[6].weight.shape == (3, 2)
    assert count_macs(small, (1, 4, 4)) == {"dense": 576 + 1152 + 6, "nonzero": 576 + 1152 + 6}
