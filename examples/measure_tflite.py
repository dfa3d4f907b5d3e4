"""Measure an existing .tflite file's clean and robust accuracy on your own images, on a board.

    python examples/measure_tflite.py --model model_int8.tflite --images ROOT \
        [--target local|ssh://user@host|qemu-aarch64] [--samples 200] [--eps 0.03]

ROOT holds ROOT/test/<class>/*.png|jpg (ROOT/train/... too: the image folder layout of
docs/api.md; only the test split is measured). The file can come from anywhere: it needs one
input (N x H x W x C or N x C x H x W, images scaled to [0, 1], int8 or float) and one output
(class scores). The board runs Square (it needs no gradients); pass --source-run, a robustedge
run folder of the float model the file came from, to add a PGD transfer set crafted on it.
The test suite runs this file on a tiny .tflite and tiny images on the host target.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict

from robustedge import api


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="The .tflite file.")
    p.add_argument("--images", type=Path, required=True, help="ROOT/test/<class>/")
    p.add_argument("--target", default="local", help="Board: local, ssh://user@host, ...")
    p.add_argument("--samples", type=int, help="A seeded subset of the test images.")
    p.add_argument("--eps", type=float, help="Square's Linf budget (default: robustedge's).")
    p.add_argument("--source-run", type=Path, help="Run folder of the file's float model.")
    p.add_argument("--square-queries", type=int, help="Square's queries per image.")
    p.add_argument("--json", type=Path, help="Also write the board's results here.")
    a = p.parse_args()

    source = api.load_run(a.source_run).model if a.source_run else None
    bundle = api.bundle_model(
        a.model, a.model.with_suffix(".bundle"), "imagefolder", data_dir=str(a.images),
        samples=a.samples, eps=a.eps, source_model=source,
    )  # fmt: skip
    bench: Dict[str, Any] = {"runs": 0}  # accuracy only, no timing
    if a.square_queries is not None:
        bench["square_queries"] = a.square_queries
    board = api.bench(bundle.path, a.target, out=a.json, **bench)

    worst = board.extra.get("worst_case") or {}
    print(f"board    {a.target} ({board.backend}), {board.n_eval['clean']} images")
    print(f"clean    {board.accuracy['clean']:.6f}")
    for label, acc in board.robust_acc().items():
        print(f"attack   {label}: {acc:.6f}")
    print(f"robust   {worst.get('acc', float('nan')):.6f}  ({worst.get('label', 'no attack ran')})")
    print(f"attacks  {json.dumps(worst.get('attacks', []))}")


if __name__ == "__main__":
    main()
