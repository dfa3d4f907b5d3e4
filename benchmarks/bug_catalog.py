"""The planted algorithm bugs of benchmarks/bugs.py (the rest: bug_catalog_edges.py):
realistic 1-3 line changes, each with the tests that should catch it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple


@dataclass(frozen=True)
class Bug:
    name: str
    cls: str  # algorithm | numbers | integrity | path | label | resume
    file: str  # under src/robustedge/
    old: str
    new: str
    tests: Tuple[str, ...]  # pytest node ids or files under tests/
    what: str


def bug(name, cls, file, old, new, tests, what) -> Bug:
    return Bug(name, cls, file, old, new, tuple(tests), what)


ALGORITHMS: List[Bug] = [
    # ------------------------------------------------------------ algorithms: compress
    bug(
        "admm-dual-sign",
        "algorithm",
        "compress/method_admm.py",
        "self.U[n] += p.detach() - self.Z[n]",
        "self.U[n] += self.Z[n] - p.detach()",
        [
            "tests/test_reference.py",
            "tests/test_reference_edges.py",
            "tests/test_exact_compress.py",
        ],
        "ADMM's scaled dual updated with the wrong sign",
    ),
    bug(
        "admm-z-ignores-dual",
        "algorithm",
        "compress/method_admm.py",
        "wu = {n: p.detach() + self.U[n] for",
        "wu = {n: p.detach() for",
        [
            "tests/test_reference.py",
            "tests/test_reference_edges.py",
            "tests/test_exact_compress.py",
        ],
        "ADMM projects W instead of W + U",
    ),
    bug(
        "admm-rho-not-grown",
        "algorithm",
        "compress/method_admm.py",
        "        self.rho *= self.growth\n",
        "        self.rho *= 1.0\n",
        [
            "tests/test_reference.py",
            "tests/test_reference_edges.py",
            "tests/test_exact_compress.py",
        ],
        "ADMM's rho never grows",
    ),
    bug(
        "hydra-mask-cache-stale",
        "algorithm",
        "compress/method_hydra.py",
        "key = tuple(s._version for s in self.scores)",
        "key = tuple(s.shape for s in self.scores)",
        [
            "tests/test_reference.py",
            "tests/test_reference_edges.py",
            "tests/test_compress_methods.py",
        ],
        "HYDRA's cached mask no longer follows its scores",
    ),
    bug(
        "hydra-init-fan-in",
        "algorithm",
        "compress/method_hydra.py",
        "fan_in = w[0].numel()",
        "fan_in = w.numel()",
        [
            "tests/test_reference.py",
            "tests/test_reference_edges.py",
            "tests/test_compress_methods.py",
        ],
        "HYDRA's score init uses the tensor size, not the fan-in",
    ),
    bug(
        "prox-hard-threshold",
        "algorithm",
        "compress/prox.py",
        "return torch.sign(w) * torch.clamp(w.abs() - step, min=0.0)",
        "return w * (w.abs() > step)",
        ["tests/test_exact_compress.py", "tests/test_compress_prox.py"],
        "L1 prox became a hard threshold (no shrinkage)",
    ),
    bug(
        "prox-group-scale-squared",
        "algorithm",
        "compress/prox.py",
        "1.0 - step / norms.clamp_min(1e-12)",
        "1.0 - step / norms.clamp_min(1e-12) ** 2",
        ["tests/test_exact_compress.py", "tests/test_compress_prox.py"],
        "group soft threshold divides by the squared norm",
    ),
    bug(
        "prox-reweighted-one-s",
        "algorithm",
        "compress/prox.py",
        "return step * s * s / (a + rel_eps * s)",
        "return step * s / (a + rel_eps * s)",
        ["tests/test_exact_compress.py", "tests/test_compress_prox.py"],
        "reweighted L1 loses its layer normalisation",
    ),
    bug(
        "keep-count-floor",
        "numbers",
        "compress/prox.py",
        "return numel - int(round(sparsity * numel))",
        "return numel - int(sparsity * numel)",
        ["tests/test_exact_compress.py", "tests/test_compress_prox.py"],
        "top-k keep count truncates instead of rounding",
    ),
    bug(
        "erk-uniform",
        "algorithm",
        "compress/prox.py",
        "raw = {n: sum(sh) / sizes[n] for",
        "raw = {n: 1.0 / sizes[n] for",
        ["tests/test_exact_compress.py", "tests/test_compress_prox.py"],
        "ERK budgets ignore the layer shape (uniform density)",
    ),
    bug(
        "cubic-ramp-square",
        "algorithm",
        "compress/schedule.py",
        "return target * (1.0 - (1.0 - t) ** 3)",
        "return target * (1.0 - (1.0 - t) ** 2)",
        ["tests/test_exact_compress.py", "tests/test_compress_prox.py"],
        "prox's cubic ramp became quadratic",
    ),
    bug(
        "lam-controller-inverted",
        "algorithm",
        "compress/schedule.py",
        "if sparsity < self.wanted():",
        "if sparsity > self.wanted():",
        ["tests/test_exact_compress.py", "tests/test_compress_prox.py"],
        "lam grows when the model is already sparse enough",
    ),
    bug(
        "gmp-power-ignored",
        "algorithm",
        "compress/schedule.py",
        "return final + (initial - final) * (1.0 - p) ** power",
        "return final + (initial - final) * (1.0 - p) ** 3.0",
        ["tests/test_gmp.py", "tests/test_exact_compress.py"],
        "gmp_power has no effect (always cubic)",
    ),
    bug(
        "gmp-turns-from-zero",
        "algorithm",
        "compress/schedule.py",
        "return in_range and (step - begin_step) % frequency == 0",
        "return in_range and step % frequency == 0",
        ["tests/test_gmp.py", "tests/test_exact_compress.py"],
        "GMP's pruning turns counted from step 0, not from begin_step",
    ),
    bug(
        "gmp-mask-only-at-turns",
        "algorithm",
        "compress/method_gmp.py",
        "            updates.append((t, target))\n        keeper(model)",
        "            updates.append((t, target))\n            keeper(model)",
        ["tests/test_gmp.py"],
        "GMP re-applies its mask only at pruning turns (pruned weights regrow in between)",
    ),
    bug(
        "kd-no-t-squared",
        "algorithm",
        "compress/distill.py",
        "return (1.0 - alpha) * ce + alpha * temp * temp * kl",
        "return (1.0 - alpha) * ce + alpha * temp * kl",
        ["tests/test_reference.py", "tests/test_reference_edges.py", "tests/test_compress_prox.py"],
        "KD loss scaled by t instead of t^2",
    ),
    bug(
        "kd-clean-target-ignored",
        "path",
        "compress/distill.py",
        "            x_t = self.clean\n",
        "            x_t = x_used\n",
        ["tests/test_compress_prox.py"],
        "kd_target clean silently queries the teacher on the adversarial batch",
    ),
    bug(
        "ema-decay-max",
        "algorithm",
        "compress/ema.py",
        "return min(self.decay, (1.0 + t) / (10.0 + t))",
        "return max(self.decay, (1.0 + t) / (10.0 + t))",
        ["tests/test_compress_ema.py"],
        "EMA warm-up takes the larger decay",
    ),
    bug(
        "magnitude-keeps-smallest",
        "algorithm",
        "compress/method_magnitude.py",
        "{n: p.detach().abs() for n, p in ctx.params.items()}, cfg.sparsity, cfg.scope.value\n"
        "    )\n    apply_masks",
        "{n: -p.detach().abs() for n, p in ctx.params.items()}, cfg.sparsity, cfg.scope.value\n"
        "    )\n    apply_masks",
        [
            "tests/test_reference.py",
            "tests/test_reference_edges.py",
            "tests/test_compress_methods.py",
        ],
        "magnitude pruning keeps the smallest weights",
    ),
    # ------------------------------------------------------------ algorithms: attacks / training
    bug(
        "apgd-no-restart-from-best",
        "algorithm",
        "attacks/apgd.py",
        "x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]",
        "grad[reduce] = grad_best[reduce]",
        ["tests/test_reference.py", "tests/test_reference_edges.py", "tests/test_apgd.py"],
        "APGD does not restart from its best point after halving the step",
    ),
    bug(
        "apgd-momentum-swapped",
        "algorithm",
        "attacks/apgd.py",
        "x_adv + a * (z - x_adv) + (1 - a) * change",
        "x_adv + (1 - a) * (z - x_adv) + a * change",
        ["tests/test_reference.py", "tests/test_reference_edges.py", "tests/test_apgd.py"],
        "APGD's momentum weights swapped",
    ),
    bug(
        "apgd-dlr-denominator",
        "algorithm",
        "attacks/apgd.py",
        "(srt[:, 0] - srt[:, 2] + 1e-12)",
        "(srt[:, 0] - srt[:, 1] + 1e-12)",
        ["tests/test_apgd.py"],
        "DLR normalised by z_pi1 - z_pi2 instead of z_pi1 - z_pi3",
    ),
    bug(
        "pgd-step-default",
        "numbers",
        "attacks/pgd.py",
        "2.5 * self.eps / steps",
        "self.eps / steps",
        ["tests/test_exact_attacks.py", "tests/test_guards.py"],
        "PGD's default step eps/steps instead of 2.5 eps/steps",
    ),
    bug(
        "pgd-restart-overwrites-fooled",
        "algorithm",
        "attacks/pgd.py",
        "take = ~done & (fooled | (loss > best_loss))",
        "take = fooled | (loss > best_loss)",
        ["tests/test_exact_attacks.py", "tests/test_attacks.py"],
        "a later PGD restart replaces an earlier fooling example",
    ),
    bug(
        "fgsm-raw-gradient",
        "algorithm",
        "attacks/fgsm.py",
        "return x + self.eps * grad.sign()",
        "return x + self.eps * grad",
        ["tests/test_reference.py", "tests/test_reference_edges.py", "tests/test_exact_attacks.py"],
        "FGSM steps along the raw gradient",
    ),
    bug(
        "trades-step-size",
        "numbers",
        "attacks/trades.py",
        "alpha = 2.5 * self.eps / self.steps",
        "alpha = self.eps / self.steps",
        ["tests/test_reference.py", "tests/test_reference_edges.py", "tests/test_attacks.py"],
        "TRADES' inner step eps/steps instead of 2.5 eps/steps",
    ),
    bug(
        "trades-beta-ignored",
        "algorithm",
        "training/adversaries.py",
        "return task_loss(logits, y, x) + self.beta * kl",
        "return task_loss(logits, y, x) + kl",
        ["tests/test_reference.py", "tests/test_reference_edges.py", "tests/test_training.py"],
        "TRADES' beta has no effect",
    ),
    bug(
        "fgsm-at-one-sided-start",
        "algorithm",
        "training/adversaries.py",
        "delta = (u * 2 - 1) * self.eps",
        "delta = u * self.eps",
        ["tests/test_reference.py", "tests/test_reference_edges.py", "tests/test_training.py"],
        "FGSM-AT's random start only in the positive direction",
    ),
    bug(
        "square-schedule-not-rescaled",
        "algorithm",
        "attacks/square_core.py",
        "it = int(it / max(n_iters, 1) * 10000)",
        "it = int(it)",
        ["tests/test_reference.py", "tests/test_reference_edges.py", "tests/test_attacks.py"],
        "Square's p schedule not rescaled to the query budget",
    ),
    bug(
        "square-queries-counted-for-all",
        "numbers",
        "attacks/square_core.py",
        "        queries[active] += 1\n",
        "        queries += 1\n",
        ["tests/test_reference.py", "tests/test_reference_edges.py", "tests/test_attacks.py"],
        "Square counts queries for images it already fooled (reported queries inflated)",
    ),
    bug(
        "awp-not-relative",
        "algorithm",
        "training/awp.py",
        "shifted[name] = p + (self.gamma * w.norm() / g_norm) * g",
        "shifted[name] = p + (self.gamma / g_norm) * g",
        ["tests/test_awp.py"],
        "AWP's perturbation not relative to the layer's weight norm",
    ),
    bug(
        "macs-ignore-groups",
        "numbers",
        "models/macs.py",
        "per_output = w[0].numel()",
        "per_output = (mod.in_channels * w[0, 0].numel()) if w.dim() == 4 else w.shape[1]",
        ["tests/test_reference.py", "tests/test_reference_edges.py", "tests/test_models.py"],
        "MACs of grouped / depthwise convolutions counted as dense convolutions",
    ),
]
