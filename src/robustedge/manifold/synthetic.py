"""The ``synthetic`` data set's known generator as an exact :class:`GeneratorManifold`."""

from __future__ import annotations

from typing import Optional

import numpy as np

from robustedge.manifold.generator import GeneratorManifold


def synthetic_manifold(
    data_dir: Optional[str] = None, name: str = "synthetic"
) -> GeneratorManifold:
    """Decoder = ``SyntheticGenerator`` (labels, z) -> images; encoder = stored z or inversion.

    Latent box [-1, 1]^6 (position, scale, rotation, thickness, intensity), so eta is a
    fraction of each factor's half-range (eta 0.3: +-0.6 px shift, +-6 degrees rotation, ...).
    """
    from robustedge.data import load_dataset
    from robustedge.data.synthetic import generator_for

    data = load_dataset(name, data_dir)
    gen = generator_for(data).eval()
    known = (
        np.concatenate([data.x_train, data.x_test]),
        np.concatenate([data.extras["z_train"], data.extras["z_test"]]),
    )
    lo, hi = data.extras["latent_box"]
    return GeneratorManifold(
        gen,
        data.name,
        data.input_shape,
        data.num_classes,
        gen.latent_dim,
        (float(lo), float(hi)),
        known=known,
    )
