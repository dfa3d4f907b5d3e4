"""Natural corruptions at 5 severities, in the spirit of CIFAR-10-C (Hendrycks & Dietterich, 2019).

Numpy only (torch is imported lazily by :func:`corruption_accuracy` when given a torch model),
so the same functions can corrupt inputs on a board. Every function maps N x C x H x W float
images in [0, 1] to images of the same shape in [0, 1]; random ones are deterministic given
``seed`` and draw the *same* random numbers at every severity, so distortion grows with severity.

Severity parameters follow CIFAR-10-C where it has them (Gaussian sigma, shot-noise photons,
impulse fraction, brightness shift, contrast factor); blur is a Gaussian blur whose sigma suits
small images (8x8 digits up to 32x32).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from robustedge.registry import Registry

CORRUPTIONS: Registry = Registry("corruption")
SEVERITIES = (1, 2, 3, 4, 5)
Corruption = Callable[[np.ndarray, int, int], np.ndarray]


def _level(values: Sequence[float], severity: int) -> float:
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    return float(values[severity - 1])


@CORRUPTIONS.register("gaussian_noise")
def gaussian_noise(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Additive N(0, sigma^2) noise, sigma in 0.04 .. 0.10 (CIFAR-10-C)."""
    sigma = _level((0.04, 0.06, 0.08, 0.09, 0.10), severity)
    noise = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    return np.clip(x + sigma * noise, 0.0, 1.0)


@CORRUPTIONS.register("shot_noise")
def shot_noise(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Poisson photon noise: ``Poisson(x * lam) / lam``, lam 500 .. 50 (CIFAR-10-C)."""
    lam = _level((500, 250, 100, 75, 50), severity)
    out = np.random.default_rng(seed).poisson(np.clip(x, 0, 1) * lam) / lam
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@CORRUPTIONS.register("impulse_noise")
def impulse_noise(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Salt-and-pepper on a fraction 0.01 .. 0.07 of pixels (CIFAR-10-C); nested across levels."""
    amount = _level((0.01, 0.02, 0.03, 0.05, 0.07), severity)
    rng = np.random.default_rng(seed)
    u, salt = rng.random(x.shape), rng.random(x.shape) < 0.5
    out = x.copy()
    hit = u < amount
    out[hit] = np.where(salt[hit], 1.0, 0.0)
    return out.astype(np.float32)


@CORRUPTIONS.register("blur")
def blur(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Gaussian blur (separable, reflect padding), sigma 0.4 .. 1.2 pixels."""
    sigma = _level((0.4, 0.6, 0.8, 1.0, 1.2), severity)
    radius = max(1, int(np.ceil(2 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    out = _conv_axis(x.astype(np.float64), k, axis=2)
    out = _conv_axis(out, k, axis=3)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _conv_axis(x: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    r = len(k) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = np.pad(x, pad, mode="reflect" if x.shape[axis] > r else "edge")
    n = x.shape[axis]
    return sum(w * np.take(xp, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))


@CORRUPTIONS.register("brightness")
def brightness(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Add 0.05 .. 0.3 to every pixel and clip (CIFAR-10-C shifts HSV value by this much)."""
    shift = _level((0.05, 0.1, 0.15, 0.2, 0.3), severity)
    return np.clip(x + shift, 0.0, 1.0).astype(np.float32)


@CORRUPTIONS.register("contrast")
def contrast(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Scale deviations from each image's mean by 0.75 .. 0.15 (CIFAR-10-C)."""
    c = _level((0.75, 0.5, 0.4, 0.3, 0.15), severity)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip((x - mean) * c + mean, 0.0, 1.0).astype(np.float32)


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply the registered corruption ``name`` at ``severity`` (1..5) with ``seed``."""
    return CORRUPTIONS.get(name)(np.asarray(x, dtype=np.float32), severity, seed)


def _predictor(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Labels from a torch module, or from a callable returning logits or labels (numpy)."""
    try:
        import torch.nn as nn
    except ImportError:  # on a board: model must be a plain callable
        nn = None
    if nn is not None and isinstance(model, nn.Module):
        import torch

        from robustedge.attacks.base import predict

        return lambda xb: predict(model, torch.as_tensor(xb)).numpy()

    def run(xb: np.ndarray) -> np.ndarray:
        out = np.asarray(model(xb))
        return out.argmax(1) if out.ndim == 2 else out

    return run


def corruption_accuracy(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    seed: int = 0,
    names: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """``{name: {severity: acc}, "mean": mean over all names and severities, "clean": acc}``.

    ``model`` is a torch module or a numpy callable (logits or labels). Severities are keys
    "1".."5" so the result round-trips through JSON unchanged.
    """
    predict = _predictor(model)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    result: Dict[str, Any] = {"clean": float((predict(x) == y).mean())}
    accs = []
    for name in names or CORRUPTIONS.names():
        per = {}
        for s in SEVERITIES:
            acc = float((predict(corrupt(x, name, s, seed)) == y).mean())
            per[str(s)] = acc
            accs.append(acc)
        result[name] = per
    result["mean"] = float(np.mean(accs))
    return result
