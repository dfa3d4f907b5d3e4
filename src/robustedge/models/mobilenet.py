"""MobileNetV2 (Sandler et al., CVPR 2018): inverted residuals with depthwise 3x3 convs.

Channels follow the paper's table times ``width`` (rounded to multiples of 8, as in the
reference code); the last 1x1 conv has ``last_channel`` (1280) x max(1, width) channels.
No dropout (plain layers only, for ONNX/TFLite export and channel pruning).

Stride schedule: inputs of at least 64x64 use the ImageNet schedule (stem stride 2, five
downsamplings); smaller inputs use the common CIFAR schedule (stem and the 24-channel stage at
stride 1, three downsamplings: 32 -> 16 -> 8 -> 4). Any downsampling that would take the map
below 2x2 runs at stride 1 instead (8x8 digits: 8 -> 4 -> 2 -> 2).
"""

from __future__ import annotations

from typing import List, Tuple

import torch.nn as nn

from robustedge.models.base import MODELS
from robustedge.models.resnet import halve

# (expansion t, channels c, repeats n, stride s) from Table 2 of the paper.
SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor``, never below 90 % of ``v`` (reference code)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
    layers: List[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection (+ x if same shape)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: List[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(c_in, hidden, 1))
        layers.append(conv_bn(hidden, hidden, 3, stride, groups=hidden))
        layers.append(conv_bn(hidden, c_out, 1, act=False))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(
        self,
        input_shape: Tuple[int, int, int],
        num_classes: int,
        width: float = 1.0,
        last_channel: int = 1280,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        size = min(h, w)
        imagenet = size >= 64
        stem_c = make_divisible(32 * width)
        stem_stride, size = halve(size) if imagenet else (1, size)
        layers: List[nn.Module] = [conv_bn(c, stem_c, 3, stem_stride)]
        c_in = stem_c
        for i, (t, ch, n, s) in enumerate(SETTINGS):
            c_out = make_divisible(ch * width)
            for j in range(n):
                stride = 1
                if j == 0 and s == 2 and (imagenet or i != 1):
                    stride, size = halve(size)
                layers.append(InvertedResidual(c_in, c_out, stride, t))
                c_in = c_out
        self.last_channel = make_divisible(last_channel * max(1.0, width))
        layers.append(conv_bn(c_in, self.last_channel, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(self.last_channel, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


@MODELS.register("mobilenetv2")
def mobilenetv2(
    input_shape: Tuple[int, int, int],
    num_classes: int,
    width: float = 1.0,
    last_channel: int = 1280,
) -> nn.Module:
    """MobileNetV2 with width multiplier ``width`` and a small-input stride schedule."""
    if not (width > 0) or last_channel < 1:
        raise ValueError(
            f"mobilenetv2 needs width > 0 and last_channel >= 1 ({width}, {last_channel})"
        )
    return MobileNetV2(input_shape, num_classes, width, last_channel)
