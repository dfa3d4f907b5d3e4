"""ResNet-20 for CIFAR (He et al., CVPR 2016, Sec. 4.2): 3 stages x 3 basic blocks.

Stages have 16/32/64 channels (times ``width``); stages 2 and 3 halve the resolution. Shortcuts
use **option B** (a 1x1 conv + BatchNorm where the shape changes), not the parameter-free
zero-padding option A, so channel-pruning tools can trace every dependency. ~0.27M parameters
at width 1 with 10 classes.

Small inputs: a stage downsamples only when the result stays at least 2x2 (8x8 digits:
8 -> 4 -> 2; a 2x2 input keeps 2x2 throughout).
"""

from __future__ import annotations

from typing import List, Tuple

import torch.nn as nn

from robustedge.models.base import MODELS
from robustedge.models.vgg import scaled


def halve(size: int, min_size: int = 2) -> Tuple[int, int]:
    """(stride, new size): stride 2 (padding 1, so ceil(size / 2)) unless that goes below
    ``min_size``; then stride 1 and the size is kept."""
    new = (size + 1) // 2
    return (2, new) if new >= min_size else (1, size)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:  # option B: projection shortcut
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv, ``len(blocks)`` stages of basic blocks, global average pool, linear head."""

    def __init__(
        self,
        input_shape: Tuple[int, int, int],
        num_classes: int,
        blocks: Tuple[int, ...] = (3, 3, 3),
        channels: Tuple[int, ...] = (16, 32, 64),
        width: float = 1.0,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        chans = [scaled(ch, width) for ch in channels]
        self.conv1 = nn.Conv2d(c, chans[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(chans[0])
        self.relu = nn.ReLU()
        stages: List[nn.Module] = []
        c_in, size = chans[0], min(h, w)
        for i, (n, c_out) in enumerate(zip(blocks, chans)):
            stride, size = halve(size) if i > 0 else (1, size)
            layers = [BasicBlock(c_in, c_out, stride)]
            layers += [BasicBlock(c_out, c_out, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(out)))


@MODELS.register("resnet20")
def resnet20(input_shape: Tuple[int, int, int], num_classes: int, width: float = 1.0) -> nn.Module:
    """ResNet-20 (3x3 basic blocks, 16/32/64 x ``width`` channels, option-B shortcuts)."""
    if not (width > 0):
        raise ValueError(f"resnet20 width must be > 0, got {width}")
    return CifarResNet(input_shape, num_classes, (3, 3, 3), (16, 32, 64), width)
