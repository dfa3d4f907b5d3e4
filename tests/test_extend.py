"""Adding a component is registering it (docs/architecture.md, "How to add").

A toy data set and a toy attack are registered here and nowhere else; the configs, the command
line's help, the recipe and the run functions then know them. The other kinds have their own
toy test beside their code: a pruning method (tests/test_compress_methods.py), a board target
(tests/test_device_config.py) and an export format (tests/test_export_config.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustedge.attacks import ATTACKS, Attack
from robustedge.data import DATASETS, Dataset


def _bars(data_dir: object = None) -> Dataset:
    """3 classes of 8x8 images: a bright row, a bright column or a bright diagonal, in noise."""
    rng = np.random.default_rng(0)
    n = 240
    y = np.arange(n) % 3
    x = rng.uniform(0, 0.3, size=(n, 1, 8, 8)).astype(np.float32)
    pos = rng.integers(0, 8, size=n)
    for i in range(n):
        if y[i] == 0:
            x[i, 0, pos[i], :] = 1.0
        elif y[i] == 1:
            x[i, 0, :, pos[i]] = 1.0
        else:
            x[i, 0][np.eye(8, dtype=bool)] = 1.0
    return Dataset("toy-bars", x[:180], y[:180], x[180:], y[180:], num_classes=3)


class SignNoise(Attack):
    """A random +-eps per pixel (one query, no gradient): a toy black-box attack."""

    name = "toy-noise"
    short_name = "Noise"

    def _perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        noise = torch.randint(0, 2, x.shape, generator=self.generator).float() * 2 - 1
        return x + self.eps * noise


@pytest.fixture
def toys():
    DATASETS.register("toy-bars", _bars)
    ATTACKS.register("toy-noise", SignNoise)
    yield
    DATASETS.unregister("toy-bars")
    ATTACKS.unregister("toy-noise")


def test_a_registered_data_set_and_attack_are_known_everywhere(toys, tmp_path):
    from robustedge.attacks import AttackSpec
    from robustedge.cli import cli
    from robustedge.recipe import parse_recipe
    from robustedge.training.config import TrainConfig
    from robustedge.training.evaluate import EvalPlan
    from robustedge.training.run import eval_run, train_run

    # help texts read the registries when shown
    assert "toy-bars" in CliRunner().invoke(cli, ["train", "--help"]).output
    assert "toy-noise" in CliRunner().invoke(cli, ["eval", "--help"]).output
    # the configs and the recipe validate through the registries
    cfg = TrainConfig(
        data="toy-bars", model="tiny", adversary="none", epochs=10, batch_size=16, lr=1e-2
    )
    recipe = parse_recipe(
        "name: t\ndata: {name: toy-bars}\nteacher: {train: {model: tiny, epochs: 1}}\n"
        "evaluate: {attacks: [toy-noise], eps: [0.2]}\n",
        "r.yaml",
    )
    assert recipe.data.name == "toy-bars" and recipe.evaluate.attacks == ("toy-noise",)
    # the run functions use them
    metrics = train_run(cfg, tmp_path / "run")
    assert metrics["clean_acc"] > 0.9  # the bars are easy
    result = eval_run(tmp_path / "run", EvalPlan(attacks=("toy-noise",), eps=(0.2,)))
    (row,) = result["robust"]
    assert row["attack"] == "toy-noise" and row["eps"] == 0.2 and 0 <= row["acc"] <= 1
    spec = AttackSpec.default("toy-noise", 0.2)
    assert spec.record()["steps"] == 0 and spec.restarts == 1  # the base's defaults


def test_the_toys_are_gone_after_unregistering():
    from robustedge.errors import UnknownNameError
    from robustedge.training.config import TrainConfig

    assert "toy-bars" not in DATASETS and "toy-noise" not in ATTACKS
    with pytest.raises(UnknownNameError, match="unknown data set 'toy-bars' \\(known: cifar10"):
        TrainConfig(data="toy-bars")


def test_a_duplicate_name_is_refused():
    with pytest.raises(ValueError, match="attack 'pgd' is already registered"):
        ATTACKS.register("pgd", SignNoise)
