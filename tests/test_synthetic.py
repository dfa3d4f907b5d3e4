"""The synthetic data set: a known, differentiable generator that reproduces its images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustedge.data import load_dataset
from robustedge.data.synthetic import (
    GeneratorSettings,
    SyntheticGenerator,
    clamp_latent,
    generator_for,
    make_synthetic,
    render,
    rgb32_settings,
)
from robustedge.errors import DataError


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic")


def test_fixed_set_shapes_and_extras(synthetic):
    d = synthetic
    assert d.input_shape == (1, 16, 16) and d.num_classes == 10
    assert d.x_train.shape == (3000, 1, 16, 16) and d.x_test.shape == (1000, 1, 16, 16)
    assert d.x_train.dtype == np.float32 and 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    z = d.extras["z_train"]
    assert z.dtype == np.float32 and z.shape == (3000, 6) and np.abs(z).max() <= 1.0
    assert d.extras["z_test"].shape == (1000, 6)
    assert np.bincount(d.y_train).tolist() == [300] * 10  # balanced
    assert len(d.extras["latent_names"]) == 6 and tuple(d.extras["latent_box"]) == (-1.0, 1.0)


def test_render_reproduces_stored_images(synthetic):
    gen = generator_for(synthetic)
    for split in ("train", "test"):
        y = torch.from_numpy(getattr(synthetic, f"y_{split}"))
        z = torch.from_numpy(synthetic.extras[f"z_{split}"])
        with torch.no_grad():
            x = gen(y, z).numpy()
        np.testing.assert_array_equal(x, getattr(synthetic, f"x_{split}"))  # same batch: exact
    with torch.no_grad():  # a sub-batch through the module-level function
        part = render(y[5:37], z[5:37], GeneratorSettings.from_dict(synthetic.extras["generator"]))
    np.testing.assert_allclose(part.numpy(), synthetic.x_test[5:37], atol=1e-5)


def test_deterministic_per_seed():
    a, b = make_synthetic(40, 20, seed=3), make_synthetic(40, 20, seed=3)
    c = make_synthetic(40, 20, seed=4)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(
        a.extras["z_test"], b.extras["z_test"]
    )
    assert not np.array_equal(a.extras["z_train"], c.extras["z_train"])


def test_gradient_wrt_every_latent_is_finite_and_nonzero():
    gen = SyntheticGenerator()
    labels = torch.arange(gen.num_classes)
    z = (torch.rand(gen.num_classes, gen.latent_dim, generator=torch.Generator().manual_seed(0))
         * 1.6 - 0.8).requires_grad_(True)  # fmt: skip
    weights = torch.randn(gen.num_classes, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    (gen(labels, z) * weights).sum().backward()
    assert torch.isfinite(z.grad).all()
    rot = gen.latent_names.index("rotation")
    symmetric = [gen.settings.classes.index(c) for c in ("ring", "disk")]
    moves = z.grad.abs() > 1e-4
    assert moves.sum() == moves.numel() - 2, z.grad  # every class responds to every factor ...
    assert not moves[symmetric, rot].any()  # ... except round shapes to rotation


def test_gradient_finite_at_box_corners_and_centre():
    gen = SyntheticGenerator()
    labels = torch.arange(gen.num_classes).repeat(3)
    z = torch.cat([torch.zeros(10, 6), torch.ones(10, 6), -torch.ones(10, 6)]).requires_grad_()
    gen(labels, z).square().sum().backward()
    assert torch.isfinite(z.grad).all()


def test_latent_moves_image_as_its_factor_says():
    gen = SyntheticGenerator()
    y = torch.tensor([3, 3])  # plus
    z = torch.zeros(2, 6)
    z[1, 0] = 1.0  # dx = +2.5 px: mass moves right
    x = gen(y, z)[:, 0]
    cols = torch.arange(16.0)
    centre = (x.sum(1) * cols).sum(1) / x.sum((1, 2))
    assert 2.0 < float(centre[1] - centre[0]) < 3.0
    z2 = torch.zeros(2, 6)
    z2[1, 5] = -1.0  # lower intensity
    x2 = gen(y, z2)
    assert float(x2[1].max()) < float(x2[0].max())


def test_classes_differ_and_are_learnable(synthetic):
    gen = SyntheticGenerator()
    with torch.no_grad():
        protos = gen(torch.arange(10), torch.zeros(10, 6)).reshape(10, -1)
    dist = torch.cdist(protos, protos) + torch.eye(10) * 1e9
    assert float(dist.min()) > 1.0  # every pair of class prototypes clearly apart (L2)
    from sklearn.neighbors import KNeighborsClassifier

    x_tr = synthetic.x_train.reshape(3000, -1)
    knn = KNeighborsClassifier(1).fit(x_tr, synthetic.y_train)
    acc = knn.score(synthetic.x_test.reshape(1000, -1), synthetic.y_test)
    assert acc > 0.8  # measured 0.938; chance is 0.1


def test_settings_roundtrip_and_validation():
    s = GeneratorSettings()
    assert GeneratorSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown shapes"):
        GeneratorSettings(classes=("ring", "blob"))
    gen = SyntheticGenerator(GeneratorSettings(classes=("hbar", "vbar")))
    assert gen.num_classes == 2
    with pytest.raises(ValueError, match="labels must lie"):
        gen(torch.tensor([2]), torch.zeros(1, 6))
    with pytest.raises(ValueError, match="z"):
        gen(torch.tensor([0]), torch.zeros(1, 5))


def test_clamp_and_generator_for_other_sets(digits):
    assert float(clamp_latent(torch.full((2, 6), 3.0)).max()) == 1.0
    with pytest.raises(DataError, match="no known generator"):
        generator_for(digits)


@pytest.fixture(scope="module")
def synthetic32():
    return load_dataset("synthetic32")


def test_rgb32_set_shapes_extras_and_exact_render(synthetic32):
    d = synthetic32
    assert d.name == "synthetic32" and d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert d.x_train.shape == (2000, 3, 32, 32) and d.x_test.shape == (500, 3, 32, 32)
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert d.extras["z_train"].shape == (2000, 9) and np.abs(d.extras["z_test"]).max() <= 1.0
    assert d.extras["latent_names"][-3:] == ["red", "green", "blue"]
    assert np.bincount(d.y_test).tolist() == [50] * 10
    gen = generator_for(d)
    assert gen.settings == rgb32_settings()
    y, z = torch.from_numpy(d.y_test), torch.from_numpy(d.extras["z_test"])
    with torch.no_grad():
        np.testing.assert_array_equal(gen(y, z).numpy(), d.x_test)  # same batch: exact
    # colour: the three channels of one image differ (not a grey image copied three times)
    assert float(np.abs(d.x_test[:, 0] - d.x_test[:, 1]).max()) > 0.1


def test_rgb32_latents_move_the_image_as_their_factors_say():
    gen = SyntheticGenerator(rgb32_settings())
    assert gen.latent_dim == 9
    y = torch.tensor([3, 3])  # plus
    z = torch.zeros(2, 9)
    z[1, 0] = 1.0  # dx = +5 px at 32 x 32
    x = gen(y, z)[:, 0]
    cols = torch.arange(32.0)
    centre = (x.sum(1) * cols).sum(1) / x.sum((1, 2))
    assert 4.0 < float(centre[1] - centre[0]) < 6.0
    z = torch.zeros(2, 9)
    z[1, gen.latent_names.index("green")] = -1.0  # only the green channel dims
    x = gen(y, z)
    assert torch.equal(x[0, 0], x[1, 0]) and torch.equal(x[0, 2], x[1, 2])
    assert float(x[1, 1].max()) < 0.6 * float(x[0, 1].max())


def test_rgb32_gradient_wrt_every_latent_is_finite_and_nonzero():
    gen = SyntheticGenerator(rgb32_settings())
    labels = torch.tensor([2, 3, 9])  # triangle, plus, tee: no rotational symmetry
    z = (torch.rand(3, 9, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8).requires_grad_()
    weights = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    (gen(labels, z) * weights).sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad.abs() > 1e-4).all()


def test_rgb32_is_learnable(synthetic32):
    from sklearn.neighbors import KNeighborsClassifier

    d = synthetic32
    knn = KNeighborsClassifier(1).fit(d.x_train.reshape(len(d.x_train), -1), d.y_train)
    assert knn.score(d.x_test.reshape(len(d.x_test), -1), d.y_test) > 0.8  # measured 0.89


def test_rgb32_settings_validation_and_old_dicts():
    s = rgb32_settings()
    assert GeneratorSettings.from_dict(s.to_dict()) == s
    old = GeneratorSettings().to_dict()
    del old["channels"]  # generator dicts saved before the RGB variant
    assert GeneratorSettings.from_dict(old) == GeneratorSettings()
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        GeneratorSettings(channels=2)
    with pytest.raises(ValueError, match="red, green, blue"):
        GeneratorSettings(channels=3)  # grey factors without the colour gains


def test_rgb32_exact_manifold_for_on_manifold_attacks(synthetic32):
    from robustedge.manifold import load_manifold

    m = load_manifold("synthetic32")
    assert m.input_shape == (3, 32, 32) and m.latent_dim == 9 and m.z_bounds == (-1.0, 1.0)
    x, y = torch.from_numpy(synthetic32.x_test[:8]), torch.from_numpy(synthetic32.y_test[:8])
    z = m.encode(x, y)
    np.testing.assert_array_equal(z.numpy(), synthetic32.extras["z_test"][:8])
    with torch.no_grad():
        np.testing.assert_allclose(m.decode(z, y).numpy(), x.numpy(), atol=1e-5)
