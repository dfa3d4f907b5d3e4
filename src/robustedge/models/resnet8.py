"""ResNet-8: MLPerf Tiny's image-classification reference network (Banbury et al., 2021).

The EEMBC/MLPerf Tiny ``resnet_v1_eembc`` model for 32x32x3 inputs (CIFAR-10): a 3x3 conv stem
with 16 filters, then three residual stacks of two 3x3 convs each (16, 32, 64 filters; stacks
2 and 3 start with stride 2), global average pooling and a linear head. As in the reference,
every conv has a bias and is followed by BatchNorm, and where a stack changes the shape the
shortcut is a plain 1x1 conv (with bias, no BatchNorm); stack 1 adds the identity.

Parameters: 78,186 trainable at width 1 with 10 classes, 78,666 counting the BatchNorm running
statistics (the reference Keras summary's total). Small inputs: a stack downsamples only while
the result stays at least 2x2 (8x8 digits: 8 -> 4 -> 2).
"""

from __future__ import annotations

from typing import Tuple

import torch.nn as nn

from robustedge.models.base import MODELS
from robustedge.models.resnet import halve
from robustedge.models.vgg import scaled

FILTERS = (16, 32, 64)


class Stack(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (identity or 1x1 conv), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride)

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet8(nn.Module):
    """Stem conv, three :class:`Stack` s, global average pool, linear head."""

    def __init__(
        self, input_shape: Tuple[int, int, int], num_classes: int, width: float = 1.0
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        chans = [scaled(f, width) for f in FILTERS]
        self.conv1 = nn.Conv2d(c, chans[0], 3, padding=1)
        self.bn1 = nn.BatchNorm2d(chans[0])
        self.relu = nn.ReLU()
        stacks, c_in, size = [], chans[0], min(h, w)
        for i, c_out in enumerate(chans):
            stride, size = halve(size) if i > 0 else (1, size)
            stacks.append(Stack(c_in, c_out, stride))
            c_in = c_out
        self.layers = nn.Sequential(*stacks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():  # the reference's he_normal initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(out)))


@MODELS.register("resnet8")
def resnet8(input_shape: Tuple[int, int, int], num_classes: int, width: float = 1.0) -> nn.Module:
    """MLPerf Tiny ResNet-8 (16/32/64 x ``width`` filters, 1x1 conv shortcuts); ~78k params."""
    if not (width > 0):
        raise ValueError(f"resnet8 width must be > 0, got {width}")
    return ResNet8(input_shape, num_classes, width)
