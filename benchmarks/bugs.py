"""Planted bugs: does the test suite notice the bugs people really write?

Each entry below is a realistic 1-3 line bug (the kind a reviewer misses: a dual update with
the wrong sign, a cache that no longer follows its key, a percentile in the wrong unit, a hash
compared as a prefix, a setting silently ignored). For each bug, one at a time, the committed
tree (``git archive HEAD``, or the working tree with ``--worktree``) is copied into a temp
folder, the bug is applied there (never in the checkout: the exact ``old`` text must occur once
in the file, else the entry is stale and reported as such), and the bug's related tests run
against the copy (``PYTHONPATH=<copy>/src``). Killed = the tests fail; survived = they pass.

    python benchmarks/bugs.py   # every bug -> benchmarks/measured/planted_bugs.json
    python benchmarks/bugs.py --only admm-dual-sign apgd-no-restart-from-best
    python benchmarks/bugs.py --list
    python benchmarks/bugs.py --baseline      # the related tests must pass on the unmodified copy

Prints a table and writes JSON (hardware and load recorded) to benchmarks/measured/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "measured" / "planted_bugs.json"
TIMEOUT = 900


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


BUGS: List[Bug] = [
    # ------------------------------------------------------------ algorithms: compress
    bug(
        "admm-dual-sign",
        "algorithm",
        "compress/method_admm.py",
        "self.U[n] += p.detach() - self.Z[n]",
        "self.U[n] += self.Z[n] - p.detach()",
        ["tests/test_reference.py", "tests/test_exact_compress.py"],
        "ADMM's scaled dual updated with the wrong sign",
    ),
    bug(
        "admm-z-ignores-dual",
        "algorithm",
        "compress/method_admm.py",
        "wu = {n: p.detach() + self.U[n] for",
        "wu = {n: p.detach() for",
        ["tests/test_reference.py", "tests/test_exact_compress.py"],
        "ADMM projects W instead of W + U",
    ),
    bug(
        "admm-rho-not-grown",
        "algorithm",
        "compress/method_admm.py",
        "        self.rho *= self.growth\n",
        "        self.rho *= 1.0\n",
        ["tests/test_reference.py", "tests/test_exact_compress.py"],
        "ADMM's rho never grows",
    ),
    bug(
        "hydra-mask-cache-stale",
        "algorithm",
        "compress/method_hydra.py",
        "key = tuple(s._version for s in self.scores)",
        "key = tuple(s.shape for s in self.scores)",
        ["tests/test_reference.py", "tests/test_compress_methods.py"],
        "HYDRA's cached mask no longer follows its scores",
    ),
    bug(
        "hydra-init-fan-in",
        "algorithm",
        "compress/method_hydra.py",
        "fan_in = w[0].numel()",
        "fan_in = w.numel()",
        ["tests/test_reference.py", "tests/test_compress_methods.py"],
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
        ["tests/test_reference.py", "tests/test_compress_prox.py"],
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
        ["tests/test_reference.py", "tests/test_compress_methods.py"],
        "magnitude pruning keeps the smallest weights",
    ),
    # ------------------------------------------------------------ algorithms: attacks / training
    bug(
        "apgd-no-restart-from-best",
        "algorithm",
        "attacks/apgd.py",
        "x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]",
        "grad[reduce] = grad_best[reduce]",
        ["tests/test_reference.py", "tests/test_apgd.py"],
        "APGD does not restart from its best point after halving the step",
    ),
    bug(
        "apgd-momentum-swapped",
        "algorithm",
        "attacks/apgd.py",
        "x_adv + a * (z - x_adv) + (1 - a) * change",
        "x_adv + (1 - a) * (z - x_adv) + a * change",
        ["tests/test_reference.py", "tests/test_apgd.py"],
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
        ["tests/test_reference.py", "tests/test_exact_attacks.py"],
        "FGSM steps along the raw gradient",
    ),
    bug(
        "trades-step-size",
        "numbers",
        "attacks/trades.py",
        "alpha = 2.5 * self.eps / self.steps",
        "alpha = self.eps / self.steps",
        ["tests/test_reference.py", "tests/test_attacks.py"],
        "TRADES' inner step eps/steps instead of 2.5 eps/steps",
    ),
    bug(
        "trades-beta-ignored",
        "algorithm",
        "training/adversaries.py",
        "return task_loss(logits, y, x) + self.beta * kl",
        "return task_loss(logits, y, x) + kl",
        ["tests/test_reference.py", "tests/test_training.py"],
        "TRADES' beta has no effect",
    ),
    bug(
        "fgsm-at-one-sided-start",
        "algorithm",
        "training/adversaries.py",
        "delta = (u * 2 - 1) * self.eps",
        "delta = u * self.eps",
        ["tests/test_reference.py", "tests/test_training.py"],
        "FGSM-AT's random start only in the positive direction",
    ),
    bug(
        "square-schedule-not-rescaled",
        "algorithm",
        "attacks/square_core.py",
        "it = int(it / max(n_iters, 1) * 10000)",
        "it = int(it)",
        ["tests/test_reference.py", "tests/test_attacks.py"],
        "Square's p schedule not rescaled to the query budget",
    ),
    bug(
        "square-queries-counted-for-all",
        "numbers",
        "attacks/square_core.py",
        "        queries[active] += 1\n",
        "        queries += 1\n",
        ["tests/test_reference.py", "tests/test_attacks.py"],
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
        ["tests/test_reference.py", "tests/test_models.py"],
        "MACs of grouped / depthwise convolutions counted as dense convolutions",
    ),
    # ------------------------------------------------------------ numbers, units, labels
    bug(
        "p99-as-fraction",
        "numbers",
        "device/board/measure.py",
        "np.percentile(ms, [50, 90, 99])",
        "np.percentile(ms, [50, 90, 0.99])",
        ["tests/test_reference.py", "tests/test_device.py::test_runner_without_torch_measures"],
        "latency p99 computed as the 0.99th percentile",
    ),
    bug(
        "p99-is-max",
        "numbers",
        "device/board/measure.py",
        "np.percentile(ms, [50, 90, 99])",
        "np.percentile(ms, [50, 90, 100])",
        ["tests/test_reference.py", "tests/test_device.py::test_runner_without_torch_measures"],
        "latency p99 reported as the maximum",
    ),
    bug(
        "weaker-label-queries-only",
        "label",
        "device/board/measure.py",
        "if queries * restarts >= budget and n >= n_total:",
        "if queries * restarts >= budget:",
        ["tests/test_reference.py", "tests/test_device_report.py"],
        "'weaker than default' not set when Square ran on fewer images",
    ),
    bug(
        "parity-gate-strict",
        "label",
        "export/parity.py",
        'rec["clean_drop_pts"] <= margins.clean + 1e-9',
        'rec["clean_drop_pts"] < margins.clean',
        ["tests/test_guards.py", "tests/test_exact_export.py"],
        "a drop exactly at the parity margin fails the gate",
    ),
    bug(
        "teacher-win-no-margin",
        "label",
        "report/collect.py",
        "mine < theirs * (1.0 - margin)",
        "mine < theirs",
        ["tests/test_report.py", "tests/test_device_report.py"],
        "'beats the teacher' without the noise margin",
    ),
    bug(
        "headline-best-suite",
        "label",
        "report/collect.py",
        "key = min((k for k in run.suites if _eps_of(k) == eps), key=lambda k: run.accuracy[k])",
        "key = max((k for k in run.suites if _eps_of(k) == eps), key=lambda k: run.accuracy[k])",
        ["tests/test_reference.py", "tests/test_report.py"],
        "headline takes the best suite figure, not the worst",
    ),
    bug(
        "budget-flash-strict",
        "label",
        "compress/budget/flash.py",
        "c = Candidate(0.0, {}, value, value <= self.limit, weight_sparsity=s)",
        "c = Candidate(0.0, {}, value, value < self.limit, weight_sparsity=s)",
        ["tests/test_reference.py", "tests/test_budget_flash.py"],
        "a flash candidate exactly at the budget counted as over it",
    ),
    bug(
        "budget-met-wrong-side",
        "label",
        "compress/budget/strategies.py",
        '"met": measured <= self.budget.limit,\n            "margin"',
        '"met": measured >= self.budget.limit,\n            "margin"',
        ["tests/test_compress_budget.py", "tests/test_recipe_budget.py"],
        "'budget met' reported for students over the budget",
    ),
    # ------------------------------------------------------------ integrity
    bug(
        "sha256-prefix",
        "integrity",
        "device/board/bundle_format.py",
        'if sha256_file(path) != meta.get("sha256"):',
        'if not sha256_file(path).startswith(str(meta.get("sha256") or "")):',
        ["tests/test_reference.py", "tests/test_exact_bundle.py"],
        "bundle sha256 compared as a prefix (truncated or empty hash accepted)",
    ),
    bug(
        "bundle-runner-not-listed",
        "integrity",
        "device/board/bundle_format.py",
        "for rel in referenced_files(manifest) + [SQUARE, ENTRY]:",
        "for rel in referenced_files(manifest):",
        ["tests/test_exact_bundle.py", "tests/test_guards_bundle.py"],
        "the bundle's entry point and Square core may be missing from the checked list",
    ),
    bug(
        "inflate-short-accepted",
        "integrity",
        "device/board/bundle_format.py",
        "    if n != want_n:\n",
        "    if n > want_n:\n",
        ["tests/test_exact_bundle.py", "tests/test_bundle_compressed.py"],
        "a compressed model that inflates short is accepted",
    ),
    # ------------------------------------------------------------ paths never exercised
    bug(
        "shuffle-ignores-epoch",
        "path",
        "training/loop.py",
        "shard_indices(len(x), seed, epoch, world)",
        "shard_indices(len(x), seed, 0, world)",
        ["tests/test_reference.py", "tests/test_training.py"],
        "the shuffle no longer depends on the epoch",
    ),
    bug(
        "target-override-ignored",
        "path",
        "recipe/schema.py",
        "return target.bench(BenchConfig(**base))",
        "return BenchConfig(**base)",
        ["tests/test_reference.py", "tests/test_recipe.py"],
        "a recipe target's own Square settings ignored",
    ),
    bug(
        "onnx-int8-calib-subset",
        "numbers",
        "export/onnx_quant.py",
        "iter(calib_nchw.astype(np.float32))",
        "iter(calib_nchw[:8].astype(np.float32))",
        ["tests/test_reference.py", "tests/test_export.py"],
        "ONNX int8 calibrated on 8 inputs while export.json records all of them",
    ),
    bug(
        "onnx-int8-builder-calib-subset",
        "numbers",
        "export/builders.py",
        "return quantize_onnx(job.onnx, job.out(fmt), INPUT_NAME, job.calib_x)",
        "return quantize_onnx(job.onnx, job.out(fmt), INPUT_NAME, job.calib_x[:8])",
        ["tests/test_reference.py", "tests/test_export.py"],
        "the ONNX int8 builder calibrates on 8 of the inputs export.json records",
    ),
    bug(
        "calib-adv-wrong-labels",
        "path",
        "export/evalsets.py",
        "x[:n_adv] = pgd_inputs(model, x[:n_adv], y_train[idx[:n_adv]], attack, seed)",
        "x[:n_adv] = pgd_inputs(model, x[:n_adv], y_train[:n_adv], attack, seed)",
        ["tests/test_reference.py", "tests/test_export_config.py"],
        "PGD calibration inputs attacked with the wrong labels",
    ),
    # ------------------------------------------------------------ resume
    bug(
        "resume-scheduler-not-restored",
        "resume",
        "training/run.py",
        '            scheduler.load_state_dict(state["scheduler"])\n',
        "            pass\n",
        ["tests/test_resume.py::test_pgd_training_resumed_after_kill_equals_uninterrupted"],
        "a resumed training run restarts its cosine schedule",
    ),
    bug(
        "resume-generator-not-restored",
        "resume",
        "training/loop.py",
        'if generator is not None and state.get("generator") is not None:',
        'if generator is not None and state.get("generator") is None:',
        ["tests/test_resume.py::test_pgd_training_resumed_after_kill_equals_uninterrupted"],
        "a resumed run's adversary draws fresh random starts",
    ),
    bug(
        "resume-admm-rho-lost",
        "resume",
        "compress/method_admm.py",
        'lambda rho: setattr(state, "rho", float(rho)))',
        "lambda rho: None)",
        ["tests/test_resume.py::test_compress_resumed_after_kill_equals_uninterrupted[admm]"],
        "a resumed ADMM run restarts rho from its initial value",
    ),
    bug(
        "resume-gmp-step-lost",
        "resume",
        "compress/method_gmp.py",
        'state["step"] = int(saved["step"])',
        'state["step"] = 0',
        ["tests/test_resume.py::test_compress_resumed_after_kill_equals_uninterrupted[gmp]"],
        "a resumed GMP run restarts its step counter (pruning turns shift)",
    ),
    bug(
        "resume-compress-generator-lost",
        "resume",
        "compress/common.py",
        'set_rng_state(state["rng"][world.rank], self.adversary.generator)',
        'set_rng_state(state["rng"][world.rank])',
        ["tests/test_resume.py::test_compress_resumed_after_kill_equals_uninterrupted[prox]"],
        "a resumed compression run's adversary draws fresh random starts",
    ),
    # ------------------------------------------------------------ data, recipe, manifold
    bug(
        "digits-scaled-by-255",
        "numbers",
        "data/digits.py",
        "x = (bunch.images.astype(np.float32) / 16.0)",
        "x = (bunch.images.astype(np.float32) / 255.0)",
        ["tests/test_reference.py", "tests/test_data.py"],
        "digits scaled as 8-bit images (its raw range is 0..16): inputs in [0, 0.063]",
    ),
    bug(
        "idx-scaled-by-256",
        "numbers",
        "data/idx.py",
        "x = (images.astype(np.float32) / 255.0)",
        "x = (images.astype(np.float32) / 256.0)",
        ["tests/test_data.py", "tests/test_reference.py"],
        "MNIST-format images divided by 256: white is 0.996, not 1",
    ),
    bug(
        "recipe-cache-ignores-config",
        "path",
        "recipe/runner.py",
        'blob = {"kind": stage.kind, "config": stage.config, "upstream": upstream}',
        'blob = {"kind": stage.kind, "upstream": upstream}',
        ["tests/test_exact_recipe.py", "tests/test_guards.py"],
        "a recipe stage whose settings changed is served from the cache",
    ),
    bug(
        "vae-kl-sign",
        "algorithm",
        "manifold/vae.py",
        "1 + logvar - mu.pow(2) - logvar.exp()",
        "1 + logvar + mu.pow(2) - logvar.exp()",
        ["tests/test_manifold.py"],
        "the VAE's KL term rewards latent means far from 0",
    ),
]


def copy_tree(worktree: bool, dst: Path) -> None:
    """The committed tree (``git archive HEAD``) or the working tree's src/ and tests/."""
    if worktree:
        for part in ("src", "tests", "pyproject.toml", "recipes", "benchmarks", "docs"):
            p = ROOT / part
            if p.is_dir():
                shutil.copytree(p, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
            elif p.exists():
                shutil.copy2(p, dst / part)
        return
    data = subprocess.run(
        ["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dst, filter="data")


def plant(root: Path, b: Bug) -> Optional[str]:
    """Apply ``b`` in the copy at ``root``; an error text when its ``old`` is not there once."""
    path = root / "src" / "robustedge" / b.file
    text = path.read_text()
    count = text.count(b.old)
    if count != 1:
        return f"stale: the old text occurs {count} times in {b.file}"
    path.write_text(text.replace(b.old, b.new))
    return None


def run_tests(root: Path, tests: Sequence[str]) -> Tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
    ]
    cmd += ["-o", "addopts=", "--timeout", str(TIMEOUT), *tests]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return 124, time.monotonic() - t0, "timeout"
    failed = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return r.returncode, time.monotonic() - t0, (failed[0] if failed else r.stdout[-300:])


def measure_one(b: Bug, worktree: bool, baseline: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="plant-") as tmp:
        root = Path(tmp)
        copy_tree(worktree, root)
        err = None if baseline else plant(root, b)
        if err:
            return {**asdict(b), "status": "stale", "detail": err, "seconds": 0.0}
        rc, secs, detail = run_tests(root, b.tests)
    if baseline:
        status = "passes" if rc == 0 else "baseline-fails"
    else:
        status = {0: "survived", 1: "killed"}.get(rc, "killed" if rc == 124 else f"error rc={rc}")
    return {**asdict(b), "status": status, "detail": detail, "seconds": round(secs, 1)}


def load_avg() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def summarize(rows: Sequence[dict]) -> dict:
    counted = [r for r in rows if r["status"] in ("killed", "survived")]
    killed = sum(r["status"] == "killed" for r in counted)
    return {
        "bugs": len(rows),
        "killed": killed,
        "survived": len(counted) - killed,
        "other": len(rows) - len(counted),
        "kill_ratio": round(killed / len(counted), 4) if counted else None,
    }


def save(out: Path, rows: List[dict], meta: dict, merge: bool) -> dict:
    """Write the record (after every bug, so an interrupted run keeps what it measured); a
    partial run (``--only``) is merged into the existing record."""
    if merge and out.exists():
        by_name = {r["name"]: r for r in json.loads(out.read_text()).get("bugs", [])}
        by_name.update({r["name"]: r for r in rows})
        rows = [by_name[b.name] for b in BUGS if b.name in by_name]
    record = {**meta, "load_after": load_avg(), "summary": summarize(rows), "bugs": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out)
    return record


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="bug names to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the bugs and exit")
    ap.add_argument("--worktree", action="store_true", help="copy the working tree, not HEAD")
    ap.add_argument("--baseline", action="store_true", help="run the tests without the bugs")
    ap.add_argument("--out", type=Path, default=OUT, help="JSON output [%(default)s]")
    args = ap.parse_args(argv)
    bugs = [b for b in BUGS if not args.only or b.name in args.only]
    if args.only and len(bugs) != len(set(args.only)):
        known = {b.name for b in BUGS}
        print(f"unknown bugs: {', '.join(sorted(set(args.only) - known))}", file=sys.stderr)
        return 2
    if args.list:
        for b in bugs:
            print(f"{b.name:32s} {b.cls:10s} {b.file:32s} {b.what}")
        return 0
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    meta = {
        "what": "realistic planted bugs, one at a time, each against its related tests",
        "commit": commit + (" + working tree" if args.worktree else ""),
        "hardware": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}",
        "load_before": load_avg(),
    }
    rows: List[dict] = []
    for b in bugs:
        row = measure_one(b, args.worktree, args.baseline)
        rows.append(row)
        print(f"{row['status']:14s} {row['seconds']:7.1f}s  {b.name:32s} {row['detail'][:90]}")
        if not args.baseline:
            save(args.out, rows, meta, merge=bool(args.only))
    print(json.dumps(summarize(rows)))
    if args.baseline:
        return 0 if all(r["status"] == "passes" for r in rows) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
