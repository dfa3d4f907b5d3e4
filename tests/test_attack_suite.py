"""Worst case per image over a named attack suite, on a tiny CNN trained on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustedge.attacks import AttackSpec, build_attack
from robustedge.attacks.suite import (
    SUITES,
    AttackSuite,
    build_suite,
    worst_case_accuracy,
)
from robustedge.errors import UnknownNameError

EPS = 0.05


@pytest.fixture(scope="module")
def trained(trained_tiny):
    """(model, x, y): the shared tiny CNN (conftest) and 96 test samples."""
    model, x, y = trained_tiny
    return model, x[:96], y[:96]


def small_suite(eps=EPS) -> AttackSuite:
    return AttackSuite(
        "small",
        (
            AttackSpec("pgd", eps, steps=5, restarts=2),
            AttackSpec("apgd-ce", eps, steps=10),
            AttackSpec("apgd-dlr", eps, steps=10),
            AttackSpec("square", eps, steps=50),
        ),
    )


def test_named_suites_hold_the_four_attacks():
    assert {"worst-case", "worst-case-quick"} <= set(SUITES.names())
    suite = build_suite("worst-case", 0.1)
    assert [s.name for s in suite.specs] == ["pgd", "apgd-ce", "apgd-dlr", "square"]
    assert suite.specs[0].restarts == 5 and suite.eps == 0.1
    d = suite.to_dict()
    assert d["name"] == "worst-case" and len(d["attacks"]) == 4
    with pytest.raises(UnknownNameError, match="worst-case"):
        build_suite("nope", 0.1)


def test_worst_case_is_the_and_of_every_attack(trained):
    model, x, y = trained
    suite = small_suite()
    res = worst_case_accuracy(model, x, y, suite, batch_size=40, seed=1)
    assert res.suite == "small" and res.attacks == suite.to_dict()["attacks"]
    assert res.n == len(x)
    accs = [r["acc"] for r in res.per_attack]
    assert [r["attack"] for r in res.per_attack] == ["pgd", "apgd-ce", "apgd-dlr", "square"]
    assert res.worst_case_acc <= min(accs) <= max(accs) <= res.clean_acc
    assert res.worst_case_acc == pytest.approx(res.robust.mean())
    # each per-attack accuracy equals a direct run of that attack (same seed, same batches)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).numpy()
    alone = []
    for spec in suite.specs:
        atk = build_attack(model, spec, generator=torch.Generator().manual_seed(1))
        idx = torch.from_numpy(np.flatnonzero(clean))
        ok = np.zeros(len(x), dtype=bool)
        for i in range(0, len(idx), 40):
            sel = idx[i : i + 40]
            x_adv = atk.perturb(x[sel], y[sel])
            with torch.no_grad():
                ok[sel.numpy()] = (model(x_adv).argmax(1) == y[sel]).numpy()
        alone.append(ok)
    assert accs == pytest.approx([float(a.mean()) for a in alone])
    assert np.array_equal(res.robust, np.logical_and.reduce(alone))
    assert sum(r["broke"] for r in res.per_attack) == int(clean.sum()) - int(res.robust.sum())
    assert set(res.to_dict()) >= {"suite", "attacks", "worst_case_acc", "per_attack"}


def test_cascade_mode_close_to_the_full_run(trained):
    model, x, y = trained
    full = worst_case_accuracy(model, x, y, small_suite(), seed=0)
    fast = worst_case_accuracy(model, x, y, small_suite(), seed=0, cascade=True)
    assert all(r["acc"] is None for r in fast.per_attack)
    # the first attack sees the same images in both modes
    assert fast.per_attack[0]["broke"] == full.per_attack[0]["broke"]
    assert fast.worst_case_acc <= full.per_attack[0]["acc"]
    assert abs(fast.worst_case_acc - full.worst_case_acc) <= 0.05


def test_by_name_and_deterministic(trained):
    model, x, y = trained
    a = worst_case_accuracy(model, x[:32], y[:32], "worst-case-quick", eps=EPS, seed=3)
    b = worst_case_accuracy(
        model, x[:32].numpy(), y[:32].numpy(), "worst-case-quick", eps=EPS, seed=3
    )
    assert a.to_dict() == b.to_dict() and np.array_equal(a.robust, b.robust)


def test_bad_suites_raise(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="one eps"):
        AttackSuite("mixed", (AttackSpec("pgd", 0.1, steps=5), AttackSpec("fgsm", 0.2)))
    with pytest.raises(ValueError, match="no attacks"):
        AttackSuite("empty", ())
    with pytest.raises(ValueError, match="twice"):
        AttackSuite("dup", (AttackSpec("fgsm", 0.1), AttackSpec("fgsm", 0.1)))
    with pytest.raises(ValueError, match="needs eps"):
        worst_case_accuracy(model, x, y, "worst-case")
    with pytest.raises(ValueError, match="labels"):
        worst_case_accuracy(model, x, y[:5], small_suite())
