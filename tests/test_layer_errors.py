"""A user's model the pruner, the exporter or int8 conversion cannot handle: one line naming
the offending layer (its module path and type) and what is unsupported, via the API, the
recipe and the CLI (non-zero exit, one line on stderr, no traceback)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from robustedge import api
from robustedge.errors import RobustEdgeError
from robustedge.models import MODELS


class StemAndHead(nn.Module):
    """Only a first conv and a last linear layer: nothing the pruning policy prunes (digits:
    1 x 8 x 8, 10 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(x)).flatten(1))


@pytest.fixture
def forget_models():
    """Unregister the user models a test registered (as a new process would)."""
    before = set(MODELS)
    yield
    for name in set(MODELS) - before:
        MODELS.unregister(name)


RECIPE = """\
name: nothing-to-prune
seed: 0
data: {{name: digits}}
teacher:
  load: {teacher}
compress:
  - name: prox
    method: prox
    adversary: none
    sparsity: [0.5]
    epochs: 1
"""


def test_recipe_refuses_a_model_with_nothing_to_prune(tmp_path, forget_models):
    t = api.train(out=tmp_path / "t", model=StemAndHead(), data="digits", epochs=1,
                  adversary="none")  # fmt: skip
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(teacher=t.run))
    with pytest.raises(
        RobustEdgeError,
        match=r"model 'StemAndHead' has no layer to prune.*stem \(Conv2d\), head \(Linear\)",
    ):
        api.run_recipe(recipe, tmp_path / "out")
    assert not (tmp_path / "out" / "students" / "prox-s0.5" / "model.safetensors").exists()
