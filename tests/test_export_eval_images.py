"""A bundle's evaluation and transfer sets are a fixed, seeded draw of at most
``--eval-images`` test images (issue 22: a test split larger than memory never goes whole into
a bundle)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from robustedge.data import load_dataset, seeded_subset


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("export*"))
    return to


def _clean_set(out: Path) -> np.ndarray:
    m = json.loads((out / "export.json").read_text())
    clean = np.load(out / m["eval_sets"]["clean"])
    assert np.load(out / m["eval_sets"]["transfer"])["x"].shape == clean["x"].shape
    return clean["x"]


def test_eval_sets_are_a_seeded_draw_of_eval_images(tiny_run, tmp_path):
    from robustedge.cli import cli
    from robustedge.export import ExportConfig, export_run

    x_test = load_dataset("digits").x_test
    cfg = ExportConfig(formats="onnx", transfer_steps=2, transfer_restarts=1, eval_images=50)
    api_out = export_run(_copy(tiny_run, tmp_path / "a"), cfg).out
    run_b = _copy(tiny_run, tmp_path / "b")
    args = ["export", str(run_b), "--formats", "onnx", "--transfer-steps", "2"]
    args += ["--transfer-restarts", "1", "--eval-images", "50", "--seed", "1"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    cli_out = next(p for p in run_b.iterdir() if (p / "export.json").is_file())
    for out, seed in ((api_out, 0), (cli_out, 1)):
        x = _clean_set(out)
        # the draw by hand: positions default_rng(seed).permutation(n)[:50], sorted
        want = np.sort(np.random.default_rng(seed).permutation(len(x_test))[:50])
        assert x.shape[0] == 50 and np.array_equal(x, x_test[want])


def test_eval_images_beyond_the_split_keeps_it_whole_and_in_order():
    d = load_dataset("digits")
    x, y = seeded_subset(d.x_test, d.y_test, len(d.x_test), seed=3)
    assert np.array_equal(x, d.x_test) and np.array_equal(y, d.y_test)
