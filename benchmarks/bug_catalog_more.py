"""Planted bugs for the references of tests/test_reference_more.py (on-manifold step, flash
estimate) and for an option silently ignored (tests/option_effects.py names its effect test)."""

from __future__ import annotations

from typing import List

from bug_catalog import Bug, bug

MORE: List[Bug] = [
    bug(
        "onmanifold-descends",
        "algorithm",
        "attacks/on_manifold.py",
        "zeta = self._clip(z, zeta.detach() + self.alpha * grad.sign())",
        "zeta = self._clip(z, zeta.detach() - self.alpha * grad.sign())",
        ["tests/test_reference_more.py", "tests/test_manifold.py"],
        "the on-manifold attack steps down the loss in latent space",
    ),
    bug(
        "onmanifold-latent-box-skipped",
        "algorithm",
        "attacks/on_manifold.py",
        "        return self.manifold.clamp_latent(z + zeta) - z\n",
        "        return zeta\n",
        ["tests/test_reference_more.py", "tests/test_manifold.py"],
        "z + zeta is no longer clamped into the generator's latent box",
    ),
    bug(
        "flash-oihw-order",
        "numbers",
        "compress/budget/flash.py",
        "w = (w.permute(0, 2, 3, 1) if w.dim() == 4 else w).reshape(w.shape[0], -1)",
        "w = w.reshape(w.shape[0], -1)",
        ["tests/test_reference_more.py", "tests/test_budget_flash.py"],
        "the flash estimate compresses conv weights in PyTorch's OIHW order, not TFLite's OHWI",
    ),
    bug(
        "flash-zero-point-int32",
        "numbers",
        "compress/budget/flash.py",
        "np.zeros(len(w), np.int64).tobytes(),",
        "np.zeros(len(w), np.int32).tobytes(),",
        ["tests/test_reference_more.py", "tests/test_budget_flash.py"],
        "the flash estimate counts 4-byte zero points (TFLite stores int64)",
    ),
    bug(
        "option-weight-decay-ignored",
        "path",
        "training/run.py",
        "self.model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay",
        "self.model.parameters(), cfg.optimizer, cfg.lr",
        ["tests/test_options_coverage.py::test_weight_decay_option_shrinks_the_weights"],
        "train --weight-decay is recorded in config.yaml but never reaches the optimizer",
    ),
]
