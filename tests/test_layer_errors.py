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


USERNETS = '''
import torch
import torch.nn as nn
from torch.nn.utils import parametrizations


class RowLSTM(nn.Module):
    """Convs, then an LSTM over the image rows: exports to ONNX, not to TFLite."""

    def __init__(self, classes):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.rnn = nn.LSTM(32, 16, batch_first=True)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        h = self.mid(torch.relu(self.stem(x)))
        o, _ = self.rnn(h.permute(0, 2, 1, 3).flatten(2))
        return self.head(o[:, -1])


def lstm(input_shape, num_classes):
    return RowLSTM(num_classes)


def weight_norm(input_shape, num_classes):
    """A weight-normed middle conv: its weight is computed, not a parameter."""
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 4, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(parametrizations.weight_norm(nn.Conv2d(4, 8, 3, padding=1)), nn.ReLU()),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )
'''


@pytest.fixture(scope="module")
def usernets(tmp_path_factory):
    """The user's models as an importable module (``usernets:lstm``), for the API and the CLI;
    a one-epoch teacher of each on digits."""
    import sys

    root = tmp_path_factory.mktemp("usernets")
    (root / "usernets.py").write_text(USERNETS)
    sys.path.insert(0, str(root))
    runs = {}
    for name in ("lstm", "weight_norm"):
        t = api.train(out=root / name, model=f"usernets:{name}", data="digits", epochs=1,
                      adversary="none")  # fmt: skip
        runs[name] = t.run
    yield root, runs
    sys.path.remove(str(root))
    sys.modules.pop("usernets", None)


def cli(root, *args):
    """``robustedge ARGS`` in a fresh interpreter that can import the user's module."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{root}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "robustedge", *args], capture_output=True, text=True, env=env
    )


def expect_one_line(proc, pattern):
    import re

    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(pattern, lines[0]), lines[0]


LSTM_TFLITE = r"layer rnn \(LSTM\) cannot be exported to tflite-int8: recurrent layers"
WEIGHT_NORM = r"layer 2\.0 \(ParametrizedConv2d\) has no weight parameter to prune"


def test_export_names_the_layer_tflite_cannot_hold(usernets, tmp_path):
    _, runs = usernets
    with pytest.raises(RobustEdgeError, match=rf"model 'usernets:lstm': {LSTM_TFLITE}"):
        api.export(runs["lstm"], formats=("tflite-int8",), out=tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.failed").exists()
    x = api.export(runs["lstm"], formats=("onnx",), out=tmp_path / "onnx", transfer_steps=1)
    assert x.passed and list(x.artifacts) == ["onnx"]  # the same model exports to ONNX


def test_compress_names_a_layer_with_no_weight_parameter(usernets, tmp_path):
    _, runs = usernets
    for structured in (False, True):  # unstructured would zero nothing; structured crashed
        with pytest.raises(RobustEdgeError, match=WEIGHT_NORM):
            api.compress(teacher=str(runs["weight_norm"]), out=tmp_path / "s", sparsity=0.5,
                         epochs=1, structured=structured)  # fmt: skip
        assert not (tmp_path / "s" / "model.safetensors").exists()


def test_cli_prints_one_line_naming_the_layer(usernets, tmp_path):
    root, runs = usernets
    proc = cli(root, "export", str(runs["lstm"]), "--formats", "tflite-int8")
    expect_one_line(proc, LSTM_TFLITE)
    proc = cli(root, "compress", "--teacher", str(runs["weight_norm"]), "--out",
               str(tmp_path / "s"), "--sparsity", "0.5", "--epochs", "1")  # fmt: skip
    expect_one_line(proc, WEIGHT_NORM)
