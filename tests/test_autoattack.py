"""Standard AutoAttack as a suite (torchattacks, pinned): it runs on a tiny model, records the
settings that ran and the implementation, keeps every adversarial image in the eps-ball and
[0, 1], and is never weaker than its own APGD-CE component (the worst case per image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import skip_unless_installed
from robustedge.attacks import ATTACKS, AttackSpec, build_attack, predict
from robustedge.attacks.suite import SUITES, build_suite, worst_case_accuracy

skip_unless_installed("torchattacks")  # pinned in requirements/nodeps.txt
EPS = 0.1


def test_the_standard_suite_records_autoattacks_settings():
    import torchattacks

    suite = build_suite("autoattack", EPS)
    rows = [s.resolved().record() for s in suite.specs]
    assert [(r["attack"], r["steps"], r["restarts"]) for r in rows] == [
        ("autoattack-apgd-ce", 100, 1),
        ("autoattack-apgd-t", 100, 1),
        ("autoattack-fab-t", 100, 1),
        ("autoattack-square", 5000, 1),
    ]
    assert suite.label() == (
        "worst case of AA/APGD-CE-100, AA/APGD-T-100, AA/FAB-T-100, AA/Square-5000"
    )
    assert suite.cascade and suite.to_dict()["implementation"] == (
        f"torchattacks {torchattacks.__version__}"
    )
    assert "autoattack" in SUITES and "worst-case" in SUITES
    assert "implementation" not in build_suite("worst-case", EPS).to_dict()


@pytest.mark.parametrize("name", ["autoattack-apgd-ce", "autoattack-apgd-t", "autoattack-fab-t"])
def test_each_attack_stays_in_the_ball_and_leaves_global_rng_alone(trained_tiny, name):
    model, x, y = trained_tiny
    xb, yb = torch.as_tensor(x[:12]), torch.as_tensor(y[:12]).long()
    spec = AttackSpec(name, EPS, steps=5)
    attack = build_attack(model, spec, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    x_adv = attack.perturb(xb, yb)
    assert torch.equal(torch.get_rng_state(), before)  # torchattacks seeds inside fork_rng
    assert (x_adv - xb).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert ATTACKS[name].default_steps == 100


def test_wrong_bounds_are_refused(trained_tiny):
    model, _, _ = trained_tiny
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ATTACKS["autoattack-apgd-ce"](model, EPS, bounds=(-1.0, 1.0))


def test_the_suite_is_never_weaker_than_its_apgd_ce(trained_tiny):
    model, x, y = trained_tiny
    xs, ys = torch.as_tensor(x[:60]), torch.as_tensor(y[:60]).long()
    suite = build_suite("autoattack-quick", EPS)
    was = model.training
    res = worst_case_accuracy(model, xs, ys, suite, cascade=False, batch_size=32)
    assert model.training == was
    accs = {r["attack"]: r["acc"] for r in res.per_attack}
    assert set(accs) == {s.name for s in suite.specs}
    assert res.worst_case_acc <= min(accs.values()) <= accs["autoattack-apgd-ce"]
    assert res.worst_case_acc <= res.clean_acc
    assert accs["autoattack-apgd-ce"] < res.clean_acc  # the attack does something here
    # the worst case is AutoAttack's: robust only where every component failed
    assert np.array_equal(res.robust, res.robust & (predict(model, xs) == ys).numpy())
    d = res.to_dict()
    assert d["suite"] == "autoattack-quick" and d["implementation"].startswith("torchattacks")
    assert [a["steps"] for a in d["per_attack"]] == [25, 25, 25, 500]
    # the suite's own order of work (cascade) gives the same worst case
    casc = worst_case_accuracy(model, xs, ys, suite, batch_size=32)
    assert casc.cascade and casc.worst_case_acc == pytest.approx(res.worst_case_acc, abs=2 / 60)
