"""One small recipe run shared by test_recipe.py and test_report.py (made once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

RECIPE = """\
name: tiny
seed: 0
data: {{name: digits}}
teacher:
  load: {teacher}
evaluate:
  attacks: [pgd, square]
  eps: [0.1]
  pgd_steps: 3
  restarts: 1
  square_queries: 20
  corruptions: true
compress:
  - name: prox
    method: prox
    adversary: none
    eps: 0.0
    kd_alpha: 0.5
    sparsity: [0.5, 0.8]
    epochs: 1
    finetune_epochs: 1
export:
  formats: [onnx]
  transfer_steps: 2
  transfer_restarts: 1
  calib_samples: 20
  clean_margin: {margin}
  robust_margin: {margin}
devices:
  targets: [local]
  runs: 200
  square_queries: 10
  square_n: 10
"""


def write_recipe(path: Path, teacher: Path, margin: float = 50.0) -> Path:
    path.write_text(RECIPE.format(teacher=teacher, margin=margin))
    return path


def recipe_run(tmp_path_factory, teacher: Path) -> Path:
    """The output folder of the small recipe, run once per session and read by every xdist
    worker (callers copy it before changing it)."""
    from conftest import built_once

    return built_once(tmp_path_factory, "recipe-run", lambda f: _run(f, teacher)) / "out"


def _run(folder: Path, teacher: Path) -> None:
    from robustedge.recipe import load_recipe
    from robustedge.recipe.stages import run_recipe

    recipe = write_recipe(folder / "tiny.yaml", teacher)
    run_recipe(load_recipe(recipe), folder / "out")


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
