"""On-manifold adversarial training through `robustedge train` and `eval` options."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from robustedge.training import ADVERSARIES, build_adversary


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A small digits CVAE trained in-process (about 1 s)."""
    from robustedge.manifold.train import VAEConfig, train_vae

    out = tmp_path_factory.mktemp("manifold") / "vae"
    train_vae(VAEConfig(epochs=10, device="cpu"), out)
    return out


def test_adversaries_registered():
    assert {"onmanifold", "mixed"} <= set(ADVERSARIES.names())


def test_onmanifold_needs_a_manifold():
    from robustedge.errors import RobustEdgeError

    with pytest.raises(RobustEdgeError, match="needs a manifold"):
        build_adversary("onmanifold", 0.1, 2)


@pytest.mark.parametrize("name", ["onmanifold", "mixed"])
def test_batch_mix(name, vae_run, tiny_run, digits):
    """ratio of the batch is replaced by decoder outputs, the rest is clean (or PGD, mixed)."""
    from robustedge.manifold import load_manifold
    from robustedge.models import load_model

    model, _ = load_model(tiny_run)
    adv = build_adversary(name, 0.1, 2, manifold=load_manifold(vae_run), ratio=0.25)
    x, y = torch.as_tensor(digits.x_train[:16]), torch.as_tensor(digits.y_train[:16])
    seen = {}

    def task_loss(logits, yy, x_used):
        seen["x"], seen["y"] = x_used, yy
        return torch.nn.functional.cross_entropy(logits, yy)

    loss = adv.loss(model, x, y, task_loss)
    loss.backward()
    assert model.training and torch.isfinite(loss)
    assert torch.equal(seen["y"], y)
    rec = load_manifold(vae_run).reconstruct(x[:4], y[:4])
    assert not torch.allclose(seen["x"][:4], x[:4])  # on-manifold part: decoder outputs
    assert (seen["x"][:4] - rec).abs().max() < 0.9
    rest = (seen["x"][4:] - x[4:]).abs().max()
    assert rest == 0 if name == "onmanifold" else 0 < rest <= 0.1 + 1e-6
    assert adv.describe()["ratio"] == 0.25 and adv.describe()["eta"] == 0.3


def test_train_and_eval_cli(vae_run, cli, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--model", "tiny", "--epochs", "1", "--adversary", "onmanifold",
            "--manifold", str(vae_run), "--onmanifold-ratio", "0.5", "--steps", "3",
            "--eta", "0.2", "--batch-size", "128", "--no-progress", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adversary"] == "onmanifold" and metrics["ratio"] == 0.5
    # the adversary that trained had this manifold, ratio and latent budget (its describe())
    assert metrics["manifold"] == str(vae_run) and metrics["eta"] == 0.2 and metrics["steps"] == 3
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["manifold"], saved["onmanifold_ratio"], saved["eta"]) == (str(vae_run), 0.5, 0.2)
    r = cli("eval", str(out), "--attack", "onmanifold", "--manifold", str(vae_run), "--steps",
            "5", "--corruptions")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "onmanifold eta=0.3 steps=5 " in r.stdout  # the table names the latent budget
    ev = json.loads((out / "eval.json").read_text())
    (row,) = ev["robust"]
    assert row["attack"] == "onmanifold" and row["eps"] == 0.3 and row["steps"] == 5
    _check_eval_numbers(out, vae_run, ev, row)
    from robustedge.report.collect import attack_key

    assert attack_key(row) == "onmanifold eta=0.3" and attack_key({**row, "attack": "x"}) == (
        "x eps=0.3"
    )
    r = cli("eval", str(out), "--attack", "onmanifold")
    assert r.returncode == 2 and "attack 'onmanifold' needs 'manifold' (--manifold" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _check_eval_numbers(run, vae_run, ev, row) -> None:
    """eval.json's numbers, recomputed from the run's model on the digits test split: the
    clean accuracy by hand, one corruption cell by hand, the corruption mean as the mean of
    every cell, and the on-manifold row with the settings the CLI was given (eta 0.3, 5 steps,
    seed 0) through the library."""
    import numpy as np

    from robustedge.attacks import AttackSpec
    from robustedge.attacks.corruptions import corrupt
    from robustedge.data import load_dataset
    from robustedge.manifold import load_manifold
    from robustedge.models import load_model
    from robustedge.training.evaluate import robust_accuracy

    model, _ = load_model(run)
    model.eval()
    d = load_dataset("digits")
    x, y = torch.as_tensor(d.x_test), torch.as_tensor(d.y_test)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
        noisy = torch.as_tensor(corrupt(d.x_test, "gaussian_noise", 3, 0))
        noise3 = float((model(noisy).argmax(1) == y).float().mean())
    # float32 means (torch) against float64 ones (numpy): 1e-6 is float32's precision, far
    # below one image (1 / 360)
    assert ev["n"] == len(y) and ev["clean_acc"] == pytest.approx(clean, abs=1e-6)
    c = ev["corruptions"]
    assert c["clean"] == pytest.approx(clean, abs=1e-6)
    assert c["gaussian_noise"]["3"] == pytest.approx(noise3, abs=1e-6)
    cells = [v for k, per in c.items() if isinstance(per, dict) for v in per.values()]
    assert len(cells) >= 5 and c["mean"] == pytest.approx(float(np.mean(cells)))
    spec = AttackSpec("onmanifold", 0.3, steps=5)
    want = robust_accuracy(
        model, x, y, spec, seed=0, resources={"manifold": load_manifold(vae_run)}
    )
    assert row["acc"] == pytest.approx(want, abs=1e-9)
    assert row["acc"] < clean  # the attack found on-manifold examples the model gets wrong


def test_config_validates_ratio():
    from robustedge.training.config import TrainConfig

    with pytest.raises(ValueError, match="onmanifold_ratio"):
        TrainConfig(onmanifold_ratio=1.5)
