"""The user's own nn.Module and torch data through the API: trained, compressed, evaluated and
reloaded (the model and data given again in a "new process", simulated by unregistering)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from robustedge import api
from robustedge.data import DATASETS, from_arrays, from_torch, register_dataset
from robustedge.errors import RobustEdgeError
from robustedge.models import MODELS
from robustedge.models.instance import check_output, register_model


class QuadrantNet(nn.Module):
    """The user's own model: 1 x 8 x 8 -> ``classes`` logits."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.mid = nn.Conv2d(4, 8, 3, padding=1)  # the prunable layer (not first, not last)
        self.head = nn.Linear(8 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.mid(torch.relu(self.stem(x))))
        return self.head(nn.functional.max_pool2d(h, 2).flatten(1))


def quadrants(n: int, seed: int):
    """Class c lights quadrant c of an 8 x 8 image (plus noise), uint8."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 60, size=(n, 1, 8, 8)).astype(np.uint8)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 0, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4] += 180
    return x, y


@pytest.fixture
def registered():
    """Forget what a test registered (as a new process would)."""
    yield
    names = ((MODELS, "QuadrantNet"), (MODELS, "StemAndHead"), (DATASETS, "quadrants"))
    for registry, name in (*names, (DATASETS, "torch")):
        if name in registry:
            registry.unregister(name)


def torch_splits():
    (xa, ya), (xb, yb) = quadrants(90, 0), quadrants(30, 1)
    train = TensorDataset(torch.from_numpy(xa).float() / 255, torch.from_numpy(ya))
    test = DataLoader(TensorDataset(torch.from_numpy(xb), torch.from_numpy(yb)), batch_size=7)
    return train, test, (xa, ya, xb, yb)


def test_from_torch_equals_from_arrays():
    train, test, (xa, ya, xb, yb) = torch_splits()
    a = from_torch(train, test, name="quadrants")  # map-style set of floats; loader of uint8
    b = from_arrays(xa, ya, xb, yb, name="quadrants")
    assert a.x_train.dtype == np.float32 and a.input_shape == (1, 8, 8) and a.num_classes == 3
    np.testing.assert_allclose(a.x_train, b.x_train, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, ya)
    assert a.x_train[0].max() == np.float32(xa[0].max()) / np.float32(255)  # by hand: uint8/255


def test_own_model_and_data_train_compress_and_reload(tmp_path, registered):
    train, test, _ = torch_splits()
    data = from_torch(train, test, name="quadrants")
    torch.manual_seed(0)
    net = QuadrantNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    t = api.train(out=tmp_path / "t", model=net, data=data, epochs=2, steps=1, lr=0.02)
    assert (t.run / "config.yaml").read_text().count("model: QuadrantNet") == 1
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # a copy trained
    s = api.compress(teacher=str(t.run), out=tmp_path / "s", sparsity=0.5, epochs=1, steps=1)
    assert s.sparsity["global"] == pytest.approx(0.5, abs=0.02)

    MODELS.unregister("QuadrantNet")  # a new process: the model and data are not registered
    DATASETS.unregister("quadrants")
    with pytest.raises(RobustEdgeError, match="unknown model 'QuadrantNet'"):
        api.load_run(t.run)
    loaded = api.load_run(t.run, model=QuadrantNet(), data=data)
    from safetensors.torch import load_file

    saved = load_file(str(t.run / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in loaded.model.state_dict().items())
    logits = loaded.model(torch.from_numpy(data.x_test))
    acc = float((logits.argmax(1).numpy() == data.y_test).mean())
    assert acc == pytest.approx(t.clean_acc, abs=1e-6)  # the run's own clean accuracy

    assert "QuadrantNet" not in MODELS and "quadrants" not in DATASETS  # load_run registers none
    e = api.evaluate(t.run, model=QuadrantNet(), data=data, attacks=("fgsm",), eps=(0.1,))
    assert e.clean_acc == pytest.approx(t.clean_acc, abs=1e-6) and e.model == "QuadrantNet"


def test_a_model_of_the_wrong_shape_is_refused_before_training(tmp_path, registered):
    train, test, _ = torch_splits()
    with pytest.raises(RobustEdgeError, match=r"must return N x 3 logits.*returned \(2, 5\)"):
        api.train(out=tmp_path / "x", model=QuadrantNet(classes=5), data=(train, test))
    with pytest.raises(RobustEdgeError, match=r"fails on inputs of shape \(3, 8, 8\)"):
        check_output(QuadrantNet(), (3, 8, 8), 3)
    assert not (tmp_path / "x").exists()


def test_built_in_names_cannot_be_taken(registered):
    with pytest.raises(RobustEdgeError, match="'lenet5' is a registered model"):
        register_model(QuadrantNet(), "lenet5")
    x, y = quadrants(12, 0)
    with pytest.raises(RobustEdgeError, match="'digits' is a registered data set"):
        register_dataset(from_arrays(x, y, x, y, name="digits"))
    first, second = QuadrantNet(), QuadrantNet()
    assert register_model(first) == register_model(second) == "QuadrantNet"
    assert MODELS.get("QuadrantNet").module is second  # an object's own name is taken over
    with pytest.raises(RobustEdgeError, match="takes no model arguments"):
        MODELS.get("QuadrantNet")((1, 8, 8), 3, width=2)


def test_giving_a_model_for_a_run_that_reloads_by_path_is_refused(tmp_path):
    from robustedge.api.inputs import run_model
    from robustedge.models import ModelSpec, build_model, save_model

    spec = ModelSpec("tiny", (1, 8, 8), 10)
    save_model(tmp_path, build_model(spec), spec)
    with pytest.raises(
        RobustEdgeError, match="trained with the model 'tiny', which reloads by path"
    ):
        run_model(tmp_path, QuadrantNet())
    assert MODELS.get("tiny") is not None and "QuadrantNet" not in MODELS


class StemAndHead(nn.Module):
    """Only a first conv and a last linear layer: nothing the pruning policy prunes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(x)).flatten(1))


def test_a_model_with_nothing_to_prune_is_refused_naming_its_layers(tmp_path, registered):
    train, test, _ = torch_splits()
    data = from_torch(train, test, name="quadrants")
    t = api.train(out=tmp_path / "t", model=StemAndHead(), data=data, epochs=1, adversary="none")
    with pytest.raises(
        RobustEdgeError, match=r"no layer to prune.*stem \(Conv2d\), head \(Linear\)"
    ):
        api.compress(teacher=str(t.run), out=tmp_path / "s", sparsity=0.5, epochs=1)
    assert not (tmp_path / "s").exists()
