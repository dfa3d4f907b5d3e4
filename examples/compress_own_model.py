"""Compress your own model, on your own image folder, from your own script; export it to
int8 TFLite, pack a bundle and measure it on a board target.

    python examples/compress_own_model.py --images ROOT --out runs/mine [--target local]

ROOT holds ROOT/train/<class>/*.png|jpg and ROOT/test/<class>/... (see docs/api.md).
The defaults are a real run's; the test suite runs this file with --epochs 1 on tiny images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn

from robustedge import api
from robustedge.data import load_dataset


class MyNet(nn.Module):
    """Your own architecture: any nn.Module that maps N x C x H x W to N x classes logits."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, required=True, help="ROOT/{train,test}/<class>/")
    p.add_argument("--out", type=Path, required=True, help="Folder for the runs.")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--sparsity", type=float, default=0.8)
    p.add_argument("--target", default="local", help="Board: local, ssh://user@host, ...")
    a = p.parse_args()

    data = load_dataset("imagefolder", str(a.images))  # to size the model
    net = MyNet(data.input_shape[0], data.num_classes)
    images = {"data": "imagefolder", "data_dir": str(a.images)}
    teacher = api.train(out=a.out / "teacher", model=net, epochs=a.epochs, **images)
    student = api.compress(
        out=a.out / "student", teacher=str(teacher.run), sparsity=a.sparsity, epochs=a.epochs
    )
    exported = api.export(student.run, formats=("tflite-int8",))
    bundle = api.bundle(student.run, a.out / "bundle")
    board = api.bench(bundle.path, a.target, runs=0)  # runs=0: accuracy only, no timing

    print(f"teacher  clean {teacher.clean_acc:.3f}  robust {teacher.robust_acc()}")
    print(f"student  clean {student.clean_acc:.3f}  robust {student.robust_acc()}")
    print(f"         {student.sparsity['global']:.0%} of prunable weights zero")
    tfl = exported.artifacts["tflite-int8"]
    print(f"int8     {exported.path('tflite-int8')}  {tfl['bytes']:,} bytes")
    print(f"board    {a.target}: {board.accuracy}  {board.robust_acc()}")


if __name__ == "__main__":
    main()
