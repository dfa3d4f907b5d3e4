"""A synthetic data set whose generator is known and differentiable (exact on-manifold examples).

Each image (1 x 16 x 16, in [0, 1]) is rendered from a class label (a shape) and a latent
vector ``z`` in the box [-1, 1]^6. Every coordinate of ``z`` maps linearly to a physical
factor: position (dx, dy, pixels), scale, rotation (radians), stroke thickness (pixels) and
intensity. ``synthetic32`` is the RGB variant for board-sized networks (3 x 32 x 32, the
geometry scaled by 2, and three more latents: the red, green and blue gain of the shape's
colour, so z lives in [-1, 1]^9). Shapes are drawn from signed distance functions through a
sigmoid edge, so ``d image / d z`` exists everywhere (Kwon & Lee 2021's "simulated data from a known
distribution"; an on-manifold perturbation is ``render(y, clamp(z + zeta))``, ||zeta||_inf <= eta).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from robustedge.data.base import DATASETS, Dataset
from robustedge.errors import DataError

N_TRAIN = 3000
N_TEST = 1000
# synthetic32: smaller splits keep a ResNet-8 recipe (train, attack, export, bench) in minutes
N_TRAIN_32 = 2000
N_TEST_32 = 500
SEED = 20213
LATENT_LOW, LATENT_HIGH = -1.0, 1.0
_EPS = 1e-12
Tensor = torch.Tensor

# name -> (centre, half-range): physical = centre + half * z for z in [-1, 1]
DEFAULT_FACTORS: Dict[str, Tuple[float, float]] = {
    "dx": (0.0, 2.5),  # pixels
    "dy": (0.0, 2.5),  # pixels
    "scale": (1.0, 0.25),
    "rotation": (0.0, math.radians(20.0)),  # < 22.5 deg: plus and x never coincide
    "thickness": (1.7, 0.6),  # stroke width, pixels
    "intensity": (0.75, 0.25),
}
# RGB variants add the shape's colour: channel c = intensity * gain_c * mask
COLOUR_FACTORS: Dict[str, Tuple[float, float]] = {
    "red": (0.7, 0.3),
    "green": (0.7, 0.3),
    "blue": (0.7, 0.3),
}
CHANNELS = (1, 3)


def _length(x: Tensor, y: Tensor) -> Tensor:
    """sqrt(x^2 + y^2) with a finite gradient at 0."""
    return torch.sqrt(x * x + y * y + _EPS)


def _segment(px: Tensor, py: Tensor, a: Tuple[float, float], b: Tuple[float, float]) -> Tensor:
    """Distance from points (px, py) to the segment a-b."""
    bax, bay = b[0] - a[0], b[1] - a[1]
    h = (((px - a[0]) * bax + (py - a[1]) * bay) / (bax * bax + bay * bay)).clamp(0.0, 1.0)
    return _length(px - a[0] - h * bax, py - a[1] - h * bay)


def _polyline(*pts: Tuple[float, float]) -> Callable[[Tensor, Tensor], Tensor]:
    def dist(px: Tensor, py: Tensor) -> Tensor:
        ds = [_segment(px, py, pts[i], pts[i + 1]) for i in range(len(pts) - 1)]
        return torch.stack(ds).amin(0)

    return dist


def _union(*fs: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda px, py: torch.stack([f(px, py) for f in fs]).amin(0)


def _ring(px: Tensor, py: Tensor) -> Tensor:
    return (_length(px, py) - 0.75).abs()


def _square(px: Tensor, py: Tensor) -> Tensor:
    """Signed distance to a filled square of half-size 0.5 (negative inside)."""
    qx, qy = px.abs() - 0.5, py.abs() - 0.5
    outside = _length(qx.clamp(min=0.0), qy.clamp(min=0.0))
    return outside + torch.maximum(qx, qy).clamp(max=0.0)


_TRI = [(0.85 * math.sin(a), -0.85 * math.cos(a)) for a in (0.0, 2.0944, 4.1888)]
# shape -> distance in shape units: unsigned (a stroke) or signed (filled, negative inside)
SHAPES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ring": _ring,
    "square": _square,
    "triangle": _polyline(_TRI[0], _TRI[1], _TRI[2], _TRI[0]),
    "plus": _union(_polyline((-0.8, 0.0), (0.8, 0.0)), _polyline((0.0, -0.8), (0.0, 0.8))),
    "hbar": _polyline((-0.85, 0.0), (0.85, 0.0)),
    "vbar": _polyline((0.0, -0.85), (0.0, 0.85)),
    "x": _union(_polyline((-0.6, -0.6), (0.6, 0.6)), _polyline((-0.6, 0.6), (0.6, -0.6))),
    "corner": _polyline((-0.55, -0.7), (-0.55, 0.55), (0.7, 0.55)),
    "disk": lambda px, py: _length(px, py) - 0.5,
    "tee": _union(_polyline((-0.75, -0.6), (0.75, -0.6)), _polyline((0.0, -0.6), (0.0, 0.8))),
}
SHAPE_NAMES = tuple(SHAPES)
FILLED = frozenset({"square", "disk"})  # signed distance: drawn filled (dilated by thickness / 2)


@dataclass(frozen=True)
class GeneratorSettings:
    """Everything that fixes the generator; stored in ``Dataset.extras['generator']``."""

    size: int = 16
    unit: float = 4.5  # pixels per shape unit at scale 1
    softness: float = 0.4  # sigmoid edge width, pixels
    classes: Tuple[str, ...] = SHAPE_NAMES
    factors: Dict[str, Tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_FACTORS))
    channels: int = 1  # 1: grey; 3: RGB (factors then end with the colour gains)

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in SHAPES]
        if unknown or not self.classes:
            raise ValueError(f"unknown shapes {unknown} (known: {', '.join(sorted(SHAPES))})")
        if self.channels not in CHANNELS:
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        names = list(DEFAULT_FACTORS) + (list(COLOUR_FACTORS) if self.channels == 3 else [])
        if list(self.factors) != names:
            raise ValueError(f"factors must be, in order: {', '.join(names)}")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["factors"] = {k: list(v) for k, v in self.factors.items()}
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> GeneratorSettings:
        factors = {k: (float(v[0]), float(v[1])) for k, v in d["factors"].items()}
        return cls(int(d["size"]), float(d["unit"]), float(d["softness"]),
                   tuple(d["classes"]), factors, int(d.get("channels", 1)))  # fmt: skip


def rgb32_settings() -> GeneratorSettings:
    """``synthetic32``'s generator: 3 x 32 x 32, the 16 x 16 geometry scaled by 2, coloured."""
    factors = dict(DEFAULT_FACTORS)
    for name in ("dx", "dy", "thickness"):  # pixel-valued factors scale with the image
        centre, half = factors[name]
        factors[name] = (2 * centre, 2 * half)
    factors.update(COLOUR_FACTORS)
    return GeneratorSettings(size=32, unit=9.0, softness=0.8, factors=factors, channels=3)


class SyntheticGenerator(nn.Module):
    """Renders (labels, z) -> images N x C x S x S in [0, 1], differentiable in ``z``."""

    def __init__(self, settings: Optional[GeneratorSettings] = None) -> None:
        super().__init__()
        self.settings = settings or GeneratorSettings()
        s = self.settings
        centre = torch.tensor([c for c, _ in s.factors.values()], dtype=torch.float32)
        half = torch.tensor([h for _, h in s.factors.values()], dtype=torch.float32)
        grid = torch.arange(s.size, dtype=torch.float32) - (s.size - 1) / 2.0
        self.register_buffer("centre", centre, persistent=False)
        self.register_buffer("half_range", half, persistent=False)
        self.register_buffer("grid", grid, persistent=False)

    @property
    def latent_dim(self) -> int:
        return len(self.settings.factors)

    @property
    def latent_names(self) -> Tuple[str, ...]:
        return tuple(self.settings.factors)

    @property
    def num_classes(self) -> int:
        return len(self.settings.classes)

    def factors(self, z: Tensor) -> Tensor:
        """Physical factors (N x k) from normalised latents z in [-1, 1]^k."""
        return self.centre.to(z.dtype) + self.half_range.to(z.dtype) * z

    def forward(self, labels: Tensor, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim or labels.shape != z.shape[:1]:
            raise ValueError(
                f"need labels (N,) and z (N, {self.latent_dim}), got {tuple(labels.shape)} "
                f"and {tuple(z.shape)}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}]")
        s = self.settings
        f = self.factors(z)[:, :, None, None]
        dx, dy, scale, rot, thick, inten = f[:, : len(DEFAULT_FACTORS)].unbind(1)
        g = self.grid.to(z.dtype)
        u, v = g[None, None, :] - dx, g[None, :, None] - dy  # columns, rows (pixels)
        cos, sin = torch.cos(rot), torch.sin(rot)
        size = scale * s.unit
        px, py = (cos * u + sin * v) / size, (cos * v - sin * u) / size
        dists = []
        for name in s.classes:
            d = SHAPES[name](px, py)
            dists.append(d if name in FILLED else d.abs())
        index = labels.long()[:, None, None, None].expand(-1, 1, *px.shape[1:])
        d = torch.stack(dists, 1).gather(1, index)
        mask = torch.sigmoid((thick[:, None] / 2 - d * size[:, None]) / s.softness)
        if s.channels == 1:
            return inten[:, None] * mask
        colour = f[:, len(DEFAULT_FACTORS) :]  # N x 3 x 1 x 1 gains
        return inten[:, None] * colour * mask


def render(labels: Tensor, z: Tensor, settings: Optional[GeneratorSettings] = None) -> Tensor:
    """Images N x C x S x S from labels (N,) and latents z (N, k) in [-1, 1]^k; differentiable."""
    return SyntheticGenerator(settings).to(z.device)(labels, z)


def clamp_latent(z: Tensor) -> Tensor:
    """Project latents back into the generator's box [-1, 1]^k."""
    return z.clamp(LATENT_LOW, LATENT_HIGH)


def generator_for(dataset: Dataset) -> SyntheticGenerator:
    """The exact generator that rendered a synthetic ``dataset`` (from ``extras['generator']``)."""
    if "generator" not in dataset.extras:
        raise DataError(
            f"data set '{dataset.name}' has no known generator "
            "(use --data synthetic or synthetic32)"
        )
    return SyntheticGenerator(GeneratorSettings.from_dict(dataset.extras["generator"]))


def _sample(gen: SyntheticGenerator, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
    labels = rng.permutation(np.arange(n) % gen.num_classes).astype(np.int64)
    z = rng.uniform(LATENT_LOW, LATENT_HIGH, size=(n, gen.latent_dim)).astype(np.float32)
    with torch.no_grad():
        x = gen(torch.from_numpy(labels), torch.from_numpy(z)).numpy()
    return x, labels, z


def make_synthetic(
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    seed: int = SEED,
    settings: Optional[GeneratorSettings] = None,
    name: str = "synthetic",
) -> Dataset:
    """Sample a fixed data set: balanced labels, z uniform in the box, images = render(y, z)."""
    gen = SyntheticGenerator(settings)
    rng = np.random.default_rng(seed)
    x_tr, y_tr, z_tr = _sample(gen, n_train, rng)
    x_te, y_te, z_te = _sample(gen, n_test, rng)
    return Dataset(
        name=name,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        num_classes=gen.num_classes,
        class_names=list(gen.settings.classes),
        extras={
            "z_train": z_tr,
            "z_test": z_te,
            "generator": gen.settings.to_dict(),
            "latent_names": list(gen.settings.factors),
            "latent_box": (LATENT_LOW, LATENT_HIGH),
            "seed": seed,
        },
    )


@DATASETS.register("synthetic")
def load_synthetic(data_dir: object = None) -> Dataset:
    """The fixed synthetic set (N_TRAIN / N_TEST images, SEED); ``data_dir`` is ignored."""
    return make_synthetic()


@DATASETS.register("synthetic32")
def load_synthetic32(data_dir: object = None) -> Dataset:
    """The fixed RGB 3 x 32 x 32 set (:func:`rgb32_settings`; N_TRAIN_32 / N_TEST_32 images,
    SEED); ``data_dir`` is ignored."""
    return make_synthetic(N_TRAIN_32, N_TEST_32, settings=rgb32_settings(), name="synthetic32")
