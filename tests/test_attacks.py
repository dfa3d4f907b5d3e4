"""Attack properties on a tiny CNN trained for a few seconds on digits."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import robustedge.attacks.square_core as square_core
from robustedge.attacks import ATTACKS, AttackSpec, Square, build_attack
from robustedge.attacks.square_core import p_schedule, square_linf_numpy, square_size

# Pixel eps-ball attacks built from (model, spec) alone are all tested here. Attacks that need
# more and measure their perturbation elsewhere have their own tests (onmanifold: latent eta,
# needs a manifold, tests/test_manifold*.py).
OWN_TESTS = {"onmanifold"}
NAMES = [n for n in ATTACKS.names() if n not in OWN_TESTS]
EPS = 0.1
# spec.steps per attack (square: queries); the AutoAttack members' standard budgets (100 steps,
# 5000 queries) cost minutes here, and the properties below do not depend on them
STEPS = {
    "pgd": 10,
    "square": 200,
    "autoattack-apgd-t": 10,
    "autoattack-fab-t": 10,
    "autoattack-square": 200,
}
WITH_RESTARTS = [n for n in NAMES if ATTACKS.get(n).has_restarts]


@pytest.fixture(scope="module")
def trained(trained_tiny):
    """(model, x, y): the shared tiny CNN (conftest) and 128 test samples."""
    model, x, y = trained_tiny
    return model, x[:128], y[:128]


def attack(model, name, eps=EPS, seed=0, **spec_kw):
    spec = AttackSpec(name, eps, steps=spec_kw.pop("steps", STEPS.get(name, 0)), **spec_kw)
    return build_attack(model, spec, generator=torch.Generator().manual_seed(seed))


def acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def ce(model, x, y) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


class StubManifold:
    """Enough of a manifold to build the onmanifold attack (its settings are what we read)."""

    def decode(self, z, y):  # pragma: no cover - never called here
        raise AssertionError


def ran_settings(name: str, spec: AttackSpec):
    """(steps, restarts) the attack built from ``spec`` runs, read from its attributes."""
    extra = {"manifold": StubManifold()} if "manifold" in ATTACKS.get(name).needs else {}
    built = build_attack(nn.Linear(4, 3), spec, **extra)
    steps = built.n_queries if isinstance(built, Square) else getattr(built, "steps", 0)
    return steps, getattr(built, "restarts", 1)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_recorded_settings_are_the_ones_that_run(name):
    """For every registered attack: the default spec (and one with overrides) records the
    steps and restarts the attack built from it runs; the class says whether it restarts."""
    cls = ATTACKS.get(name)
    assert cls.has_restarts == ("restarts" in inspect.signature(cls).parameters)
    spec = AttackSpec.default(name, EPS)
    rec = spec.record()
    assert (rec["steps"], rec["restarts"]) == ran_settings(name, spec)
    assert (rec["steps"], rec["restarts"]) == (cls.default_steps, cls.default_restarts)
    spec = AttackSpec.default(name, EPS, steps=3, restarts=2)
    rec = spec.record()
    assert (rec["steps"], rec["restarts"]) == ran_settings(name, spec)
    assert rec["steps"] == (3 if cls.default_steps else 0)
    assert rec["restarts"] == (2 if cls.has_restarts else 1)
    assert spec.resolved() == spec


def test_model_learned(trained):
    model, x, y = trained
    assert acc(model, x, y) > 0.8


@pytest.mark.parametrize("name", NAMES)
def test_linf_bound_range_and_loss_increase(trained, name):
    model, x, y = trained
    x_adv = attack(model, name).perturb(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert ce(model, x_adv, y) >= ce(model, x, y)
    assert acc(model, x_adv, y) < acc(model, x, y)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_mode_and_buffers_restored(trained, name, mode):
    model, x, y = trained
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    model.train(mode == "train")
    try:
        attack(model, name, steps=STEPS.get(name, 0) and 5).perturb(x[:16], y[:16])
        assert model.training == (mode == "train")
    finally:
        model.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, stats[k]), f"{name} changed {k}"


@pytest.mark.parametrize("name", NAMES)
def test_eps_zero_returns_x(trained, name):
    model, x, y = trained
    assert torch.equal(attack(model, name, eps=0.0).perturb(x[:16], y[:16]), x[:16])


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result(trained, name):
    model, x, y = trained
    a = attack(model, name, seed=3).perturb(x[:32], y[:32])
    b = attack(model, name, seed=3).perturb(x[:32], y[:32])
    assert torch.equal(a, b)


def test_pgd_at_least_as_strong_as_fgsm(trained):
    model, x, y = trained
    x_fgsm = attack(model, "fgsm").perturb(x, y)
    x_pgd = attack(model, "pgd", steps=20).perturb(x, y)
    assert acc(model, x_pgd, y) <= acc(model, x_fgsm, y)


def test_pgd_l2_norm_bound(trained):
    model, x, y = trained
    eps = 0.5
    x_adv = attack(model, "pgd", eps=eps, norm="l2").perturb(x, y)
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= eps + 1e-5
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert acc(model, x_adv, y) < acc(model, x, y)


@pytest.mark.parametrize("name", WITH_RESTARTS)
def test_restarts_never_weaker(trained, name):
    model, x, y = trained
    eps = 0.05  # weak enough that some samples survive one restart
    one = acc(model, attack(model, name, eps=eps, restarts=1).perturb(x, y), y)
    three = acc(model, attack(model, name, eps=eps, restarts=3).perturb(x, y), y)
    assert three <= one


# ---- Square ---------------------------------------------------------------------------


def test_square_lowers_accuracy_within_budget(trained):
    model, x, y = trained
    sq = attack(model, "square", steps=300)
    x_adv = sq.perturb(x, y)
    clean, robust = acc(model, x, y), acc(model, x_adv, y)
    assert robust <= 0.5 * clean
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert sq.last_queries is not None and sq.last_queries.max() <= 1 + 300


class BlackBox(nn.Module):
    """Only outputs, no gradient path: logits or softmax probabilities."""

    def __init__(self, inner: nn.Module, probs: bool) -> None:
        super().__init__()
        self.inner, self.probs = inner, probs

    def forward(self, t):
        with torch.no_grad():
            out = self.inner(t)
            return torch.softmax(out, dim=1) if self.probs else out


@pytest.mark.parametrize("scores", ["logits", "probs"])
def test_square_needs_only_outputs(trained, scores):
    model, x, y = trained
    box = BlackBox(model, probs=scores == "probs").eval()  # eval: perturb restores the mode
    x_adv = attack(box, "square", steps=300, params={"scores": scores}).perturb(x, y)
    assert acc(model, x_adv, y) <= 0.5 * acc(model, x, y)
    with pytest.raises(RuntimeError):  # gradient attacks cannot run on it
        attack(box, "fgsm").perturb(x[:4], y[:4])


def test_square_from_spec_maps_steps_and_restarts(trained):
    model = trained[0]
    sq = build_attack(model, AttackSpec("square", 0.1, steps=0))
    assert isinstance(sq, Square) and sq.n_queries == 1000 and sq.restarts == 1
    sq = build_attack(
        model, AttackSpec("square", 0.1, steps=50, restarts=2, params={"p_init": 0.3})
    )
    assert (sq.n_queries, sq.restarts, sq.p_init) == (50, 2, 0.3)
    with pytest.raises(ValueError, match="linf"):
        build_attack(model, AttackSpec("square", 0.1, norm="l2"))
    with pytest.raises(ValueError, match="p_init"):
        build_attack(model, AttackSpec("square", 0.1, params={"p_init": 0.0}))
    with pytest.raises(ValueError, match="scores"):
        build_attack(model, AttackSpec("square", 0.1, params={"scores": "softmax"}))


def test_square_schedule_and_window_sizes():
    assert p_schedule(0.8, 0, 1000) == 0.8
    assert p_schedule(0.8, 999, 1000) == pytest.approx(0.8 / 512)
    ps = [p_schedule(0.8, i, 1000) for i in range(1000)]
    assert all(a >= b for a, b in zip(ps, ps[1:]))  # never grows
    for p in ps:  # 8x8 digits: windows at least 1 pixel, smaller than the image
        assert 1 <= square_size(p, 8, 8) <= 7
    assert square_size(0.8, 32, 32) == 29 and square_size(0.8 / 512, 32, 32) == 1
    assert square_size(0.5, 1, 5) == 1


def _linear_predict(weights: np.ndarray):
    return lambda batch: batch.reshape(len(batch), -1) @ weights


def test_square_core_numpy_only_properties():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3 * 6 * 6, 5)).astype(np.float32)
    x = rng.uniform(size=(20, 3, 6, 6)).astype(np.float32)
    y = (x.reshape(20, -1) @ w).argmax(1)  # all correct at the start
    x_adv, q = square_linf_numpy(_linear_predict(w), x, y, 0.1, n_queries=100, rng=1, restarts=2)
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert q.min() >= 2 and q.max() <= 1 + 2 * 100
    fooled = (x_adv.reshape(20, -1) @ w).argmax(1) != y
    assert fooled.mean() > 0.5
    again, q2 = square_linf_numpy(_linear_predict(w), x, y, 0.1, n_queries=100, rng=1, restarts=2)
    assert np.array_equal(again, x_adv) and np.array_equal(q, q2)
    with pytest.raises(ValueError, match="eps"):
        square_linf_numpy(_linear_predict(w), x, y, -1.0)
    with pytest.raises(ValueError, match="N x K"):
        square_linf_numpy(lambda b: b.sum(), x, y, 0.1)


def test_square_core_leaves_misclassified_alone():
    w = np.eye(4, dtype=np.float32)
    x = np.array([[[[0.9, 0.1], [0.2, 0.3]]]], dtype=np.float32)  # class 0 wins
    x_adv, q = square_linf_numpy(_linear_predict(w), x, np.array([2]), 0.1, n_queries=10, rng=0)
    assert np.array_equal(x_adv, x) and q.tolist() == [1]


def test_square_core_imports_without_torch():
    path = Path(square_core.__file__)
    code = (
        "import sys, importlib.util\n"
        "for m in ('torch', 'robustedge', 'tensorflow'): sys.modules[m] = None\n"
        f"spec = importlib.util.spec_from_file_location('square_core', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "import numpy as np\n"
        "x = np.full((2, 1, 4, 4), 0.5, np.float32); w = np.ones((16, 2), np.float32)\n"
        "w[:, 1] = -1\n"
        "xa, q = mod.square_linf_numpy(lambda b: b.reshape(len(b), -1) @ w, x, np.array([0, 0]),"
        " 0.1, n_queries=20, rng=0)\n"
        "assert abs(xa - x).max() <= 0.1 + 1e-6\n"
        "print('ok', 'torch' in sys.modules and sys.modules['torch'] is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok False"
