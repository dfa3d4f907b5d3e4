"""Small CNNs: ``tiny`` (tests, < 10k params) and ``lenet5``."""

from __future__ import annotations

from typing import Tuple

import torch.nn as nn

from robustedge.models.base import MODELS


@MODELS.register("tiny")
def tiny(input_shape: Tuple[int, int, int], num_classes: int, width: int = 8) -> nn.Module:
    """Two 3x3 convs with BatchNorm, global average pooling, a linear head."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


@MODELS.register("lenet5")
def lenet5(input_shape: Tuple[int, int, int], num_classes: int, width: int = 1) -> nn.Module:
    """LeNet-5 style: conv(6)-pool-conv(16)-pool-fc(120)-fc(84)-fc; 'same' padding keeps
    small inputs (8x8 digits) usable; ``width`` multiplies every layer."""
    c, h, w = input_shape
    c1, c2, f1, f2 = 6 * width, 16 * width, 120 * width, 84 * width
    feat_h, feat_w = h // 4, w // 4
    if feat_h < 1 or feat_w < 1:
        raise ValueError(f"lenet5 needs inputs of at least 4x4, got {h}x{w}")
    return nn.Sequential(
        nn.Conv2d(c, c1, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * feat_h * feat_w, f1),
        nn.ReLU(),
        nn.Linear(f1, f2),
        nn.ReLU(),
        nn.Linear(f2, num_classes),
    )
