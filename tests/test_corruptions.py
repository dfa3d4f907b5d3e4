"""Natural corruptions: deterministic per seed, in range, distortion grows with severity."""

from __future__ import annotations

import numpy as np
import pytest

from robustedge.attacks.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    corrupt,
    corruption_accuracy,
)

NAMES = CORRUPTIONS.names()
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise"}


@pytest.fixture(scope="module")
def images(digits):
    return digits.x_test[:200]


def test_all_six_registered():
    assert set(NAMES) == {
        "gaussian_noise", "shot_noise", "impulse_noise", "blur", "brightness", "contrast"
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_in_range_and_shape(name, images):
    before = images.copy()
    for s in SEVERITIES:
        a = corrupt(images, name, s, seed=3)
        b = corrupt(images, name, s, seed=3)
        assert a.shape == images.shape and a.dtype == np.float32
        assert np.array_equal(a, b)
        assert a.min() >= 0.0 and a.max() <= 1.0
        assert not np.array_equal(a, images)
    if name in RANDOM:
        assert not np.array_equal(corrupt(images, name, 3, seed=3), corrupt(images, name, 3, 4))
    assert np.array_equal(images, before)  # input untouched


@pytest.mark.parametrize("name", NAMES)
def test_severity_monotone_in_distortion(name, images):
    dist = [float(np.abs(corrupt(images, name, s, seed=0) - images).mean()) for s in SEVERITIES]
    assert all(b >= a - 1e-6 for a, b in zip(dist, dist[1:])), dist
    assert dist[-1] > dist[0]


def test_bad_severity():
    with pytest.raises(ValueError, match="severity"):
        corrupt(np.zeros((1, 1, 4, 4), np.float32), "blur", 6)


def test_corruption_accuracy_with_numpy_model(images, digits):
    y = digits.y_test[:200]

    def oracle(x):  # labels of the first 200 test images, corrupted or not
        return y[: len(x)]

    res = corruption_accuracy(oracle, images, y, seed=0)
    assert res["clean"] == 1.0 and res["mean"] == 1.0
    assert set(res) == set(NAMES) | {"clean", "mean"}
    assert all(set(res[n]) == {str(s) for s in SEVERITIES} for n in NAMES)


def test_corruption_accuracy_torch_model(tiny_run, digits):
    import torch

    from robustedge.models import load_model

    model, _ = load_model(tiny_run)
    res = corruption_accuracy(model, digits.x_test, digits.y_test, seed=0, names=["contrast"])
    accs = [res["contrast"][str(s)] for s in SEVERITIES]

    def acc(x):  # the model's accuracy on x, computed here independently
        with torch.no_grad():
            pred = model.eval()(torch.as_tensor(x)).argmax(1).numpy()
        return float((pred == digits.y_test).mean())

    assert res["clean"] == acc(digits.x_test)
    for s, a in zip(SEVERITIES, accs):
        assert a == acc(corrupt(digits.x_test, "contrast", s, seed=0)), s
    assert accs[-1] < res["clean"]  # the strongest contrast loss costs accuracy
    assert res["mean"] == pytest.approx(np.mean(accs))
