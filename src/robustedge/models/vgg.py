"""VGG-11/13/16 with BatchNorm (Simonyan & Zisserman, 2015), CIFAR-style head.

The usual CIFAR variant: 3x3 convs with BatchNorm and ReLU, 2x2 max-pools between blocks,
global average pooling and a single linear classifier. At ``width=1.0`` on 3x32x32 the VGG-16
convs hold ~14.7M parameters (the standard count) plus a 512 x classes head.

Small inputs: a max-pool is **skipped** when it would shrink the feature map below 1x1 (e.g. on
8x8 digits only the first three of VGG-16's five pools run: 8 -> 4 -> 2 -> 1). The global
average pool then makes the head independent of the input size.
"""

from __future__ import annotations

from typing import List, Tuple, Union

import torch.nn as nn

from robustedge.models.base import MODELS

POOL = "M"
CFGS = {
    "vgg11": [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg13": [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg16": [64, 64, POOL, 128, 128, POOL, *[256] * 3, POOL, *[512] * 3, POOL, *[512] * 3, POOL],
}


def scaled(channels: int, width: float) -> int:
    """Channels times the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))


def _cfg_name(depth: Union[int, str]) -> str:
    name = str(depth).lower()
    name = name if name.startswith("vgg") else f"vgg{name}"
    if name not in CFGS:
        raise ValueError(f"vgg depth must be one of {sorted(CFGS)} (or 11/13/16), got '{depth}'")
    return name


def vgg_features(in_channels: int, size: Tuple[int, int], cfg: List, width: float) -> nn.Sequential:
    """Conv-BN-ReLU stack of ``cfg``; pools that would go below 1x1 are left out."""
    layers: List[nn.Module] = []
    c, (h, w) = in_channels, size
    for item in cfg:
        if item == POOL:
            if h // 2 >= 1 and w // 2 >= 1:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            continue
        out = scaled(item, width)
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        c = out
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """``features`` (conv stack) -> global average pool -> flatten -> linear ``classifier``."""

    def __init__(self, features: nn.Sequential, feat_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(feat_channels, num_classes)
        _init_weights(self)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@MODELS.register("vgg")
def vgg(
    input_shape: Tuple[int, int, int],
    num_classes: int,
    depth: Union[int, str] = "vgg16",
    width: float = 1.0,
) -> nn.Module:
    """VGG with BatchNorm; ``depth`` vgg11/vgg13/vgg16 (or 11/13/16); ``width`` scales channels."""
    if not (width > 0):
        raise ValueError(f"vgg width must be > 0, got {width}")
    cfg = CFGS[_cfg_name(depth)]
    c, h, w = input_shape
    features = vgg_features(c, (h, w), cfg, width)
    last = scaled([v for v in cfg if v != POOL][-1], width)
    return VGG(features, last, num_classes)
