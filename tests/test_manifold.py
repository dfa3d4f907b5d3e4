"""On-manifold attack and manifolds: exact generator outputs on `synthetic`, decoder outputs on
digits, latent budget respected, label kept, loss goes up, shape mismatches rejected."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from robustedge.attacks import ATTACKS, AttackSpec, build_attack
from robustedge.attacks.on_manifold import OnManifold
from robustedge.manifold import ManifoldMismatchError, load_manifold
from robustedge.manifold.train import VAEConfig

ETA = 0.3


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A small digits CVAE trained in-process (about 1 s)."""
    from robustedge.manifold.train import VAEConfig, train_vae

    out = tmp_path_factory.mktemp("manifold") / "vae"
    train_vae(VAEConfig(epochs=15, device="cpu"), out)
    return out


@pytest.fixture(scope="session")
def synthetic():
    from robustedge.data import load_dataset

    return load_dataset("synthetic")


@pytest.fixture(scope="session")
def synthetic_manifold():
    return load_manifold("synthetic")


@pytest.fixture(scope="session")
def synthetic_model(synthetic):
    """A tiny CNN trained for one quick epoch on synthetic (clearly better than chance)."""
    from robustedge.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", synthetic.input_shape, synthetic.num_classes, {}))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.as_tensor(synthetic.x_train), torch.as_tensor(synthetic.y_train)
    for i in range(0, len(x), 64):
        loss = F.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _attack(model, manifold, eta=ETA, steps=10, seed=0):
    return OnManifold(
        model, eta, manifold, steps=steps, generator=torch.Generator().manual_seed(seed)
    )


def test_registered():
    assert "onmanifold" in ATTACKS


def test_synthetic_outputs_are_exact_generator_outputs(
    synthetic, synthetic_manifold, synthetic_model
):
    from robustedge.data.synthetic import generator_for

    x, y = torch.as_tensor(synthetic.x_test[:64]), torch.as_tensor(synthetic.y_test[:64])
    z, zeta, x_adv = _attack(synthetic_model, synthetic_manifold).perturb_latent(x, y)
    assert torch.equal(z, torch.as_tensor(synthetic.extras["z_test"][:64]))  # stored latents
    assert zeta.abs().max() <= ETA + 1e-6  # latent budget
    assert (z + zeta).abs().max() <= 1.0 + 1e-6  # stays in the generator's box
    with torch.no_grad():  # an independent generator, same labels: class unchanged, exact
        rendered = generator_for(synthetic)(y, z + zeta)
    assert torch.equal(rendered, x_adv)
    assert not torch.equal(x_adv, x)


def test_synthetic_inversion_for_new_images(synthetic, synthetic_manifold):
    from robustedge.data.synthetic import generator_for

    y = torch.as_tensor(synthetic.y_test[:8])
    z = torch.as_tensor(synthetic.extras["z_test"][:8]) * 0.9  # images not in the data set
    with torch.no_grad():
        x = generator_for(synthetic)(y, z)
    z_fit = synthetic_manifold.encode(x, y)
    with torch.no_grad():
        err = (synthetic_manifold.decode(z_fit, y) - x).pow(2).mean()
    assert err < 1e-4


def test_digits_outputs_are_decoder_outputs(vae_run, digits, tiny_run):
    from robustedge.models import load_model

    model, _ = load_model(tiny_run)
    manifold = load_manifold(vae_run)
    x, y = torch.as_tensor(digits.x_test[:64]), torch.as_tensor(digits.y_test[:64])
    z, zeta, x_adv = _attack(model, manifold).perturb_latent(x, y)
    assert torch.allclose(z, manifold.encode(x, y))
    assert zeta.abs().max() <= ETA + 1e-6
    with torch.no_grad():
        assert torch.allclose(manifold.decode(z + zeta, y), x_adv, atol=1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_attack_increases_loss_over_reconstruction(vae_run, digits, tiny_run):
    from robustedge.models import load_model

    model, _ = load_model(tiny_run)
    x, y = torch.as_tensor(digits.x_test[:128]), torch.as_tensor(digits.y_test[:128])
    manifold = load_manifold(vae_run)
    rec = _attack(model, manifold, eta=0.0).perturb(x, y)  # eta = 0: Dec(Enc(x))
    assert torch.allclose(rec, manifold.reconstruct(x, y), atol=1e-6)
    spec = AttackSpec("onmanifold", ETA, steps=10, params={"manifold": str(vae_run)})
    x_adv = build_attack(model, spec, manifold=manifold).perturb(x, y)
    with torch.no_grad():
        l_rec = F.cross_entropy(model(rec), y, reduction="none")
        l_adv = F.cross_entropy(model(x_adv), y, reduction="none")
    assert l_adv.mean() > l_rec.mean()
    assert (l_adv >= l_rec - 1e-4).float().mean() > 0.9


def test_synthetic_attack_increases_loss(synthetic, synthetic_manifold, synthetic_model):
    x, y = torch.as_tensor(synthetic.x_test[:64]), torch.as_tensor(synthetic.y_test[:64])
    x_adv = _attack(synthetic_model, synthetic_manifold).perturb(x, y)
    with torch.no_grad():
        assert F.cross_entropy(synthetic_model(x_adv), y) > F.cross_entropy(synthetic_model(x), y)


def test_shape_mismatch_is_a_clear_error(synthetic_manifold, tiny_run, digits, vae_run):
    from robustedge.models import load_model
    from robustedge.training import build_adversary

    model, _ = load_model(tiny_run)  # digits 1x8x8, 10 classes
    x, y = torch.as_tensor(digits.x_test[:4]), torch.as_tensor(digits.y_test[:4])
    with pytest.raises(ManifoldMismatchError, match="built for synthetic"):
        _attack(model, synthetic_manifold).perturb(x, y)
    with pytest.raises(ManifoldMismatchError, match="trained on 'digits'"):
        build_adversary("onmanifold", 0.1, 2, manifold=load_manifold(vae_run),
                        input_shape=(1, 8, 8), num_classes=10, data_name="mnist")  # fmt: skip


def test_cli_train_mismatch_one_line(vae_run, cli, tmp_path):
    r = cli("train", "--data", "synthetic", "--model", "tiny", "--epochs", "1", "--adversary",
            "onmanifold", "--manifold", str(vae_run), "--out", str(tmp_path / "r"))  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.startswith("error: manifold") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_vae_cli_run_folder(cli, tmp_path):
    from robustedge.manifold.vae import VAEManifold

    vae_run = tmp_path / "vae"
    r = cli("manifold", "train", "--epochs", "3", "--latent-dim", "4", "--out", str(vae_run))
    assert r.returncode == 0, r.stderr
    assert "MSE/pixel" in r.stdout

    for f in ("manifold.safetensors", "manifold.json", "config.yaml", "metrics.json",
              "reconstructions.png"):  # fmt: skip
        assert (vae_run / f).is_file(), f
    metrics = json.loads((vae_run / "metrics.json").read_text())
    assert metrics["figure"] == "reconstructions.png"
    assert 0 < metrics["test"]["mse_per_pixel"] < 0.1
    spec = json.loads((vae_run / "manifold.json").read_text())
    assert spec["data"] == "digits" and spec["input_shape"] == [1, 8, 8]
    assert spec["num_classes"] == 10 and spec["latent_dim"] == 4
    assert isinstance(load_manifold(vae_run), VAEManifold)
    saved = yaml.safe_load((vae_run / "config.yaml").read_text())
    assert saved == VAEConfig(epochs=3, latent_dim=4).to_dict()


def test_vae_cli_options_come_from_the_config():
    """`manifold train` has one option per VAEConfig field, with the config's default."""
    import dataclasses

    from click.testing import CliRunner

    from robustedge.cli import cli
    from robustedge.config import default_of

    r = CliRunner().invoke(cli, ["manifold", "train", "--help"], terminal_width=10_000)
    assert r.exit_code == 0, r.output
    for f in dataclasses.fields(VAEConfig):
        (line,) = [ln for ln in r.output.splitlines() if ln.strip().startswith(
            "--" + f.name.replace("_", "-") + " ")]  # fmt: skip
        default = default_of(VAEConfig, f.name)
        if default is not None:
            assert f"[default: {default}]" in line, line
    assert "digits | fashion-mnist" in r.output  # data sets from the registry
    with pytest.raises(ValueError, match="latent_dim must be > 0, got 0"):
        VAEConfig(latent_dim=0)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        VAEConfig(device="tpu")


def test_unknown_manifold_is_clear():
    from robustedge.errors import CheckpointError

    with pytest.raises(CheckpointError, match="known: synthetic"):
        load_manifold("no/such/vae")
