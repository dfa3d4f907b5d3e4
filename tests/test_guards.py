"""Tests that guard the promises (issue 16): each would fail on a small deliberate bug.

- PGD projects every iterate onto the eps-ball and steps by ``2.5 eps / steps`` by default;
- the bundle check covers every file kind (models, data, runner code, manifest-listed files)
  against same-size edits, on the host and on the board's ``--verify-only`` path;
- both parity margins hold at their boundary (exactly at the margin passes, past it fails);
- the prox step reaches every prunable layer of a model with several of them (LeNet-5);
- the recipe cache redoes a changed stage's dependants and keeps unrelated stages;
- a checkpoint whose unpickling would run code is refused in one line and runs nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
import torch.nn as nn

from robustedge.attacks import AttackSpec, build_attack
from robustedge.attacks.pgd import PGD
from robustedge.errors import CheckpointError, RobustEdgeError
from robustedge.export.parity import Margins, failure_message, parity

# ---------------------------------------------------------------------------------- PGD


class ConstantSign(nn.Module):
    """Two logits ``(-sum x, +sum x)``: for label 0 the input gradient of the cross-entropy is
    ``2 p_1 > 0`` in every pixel, so every PGD step moves every pixel up by ``alpha``.
    Records every input it sees (the iterates PGD queries)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: List[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([-s, s], 1)


def _x() -> torch.Tensor:
    return torch.full((3, 1, 4, 4), 0.5)  # mid-range: the [0, 1] clip never binds here


def test_pgd_projects_every_step():
    """Without the per-step projection the iterates walk to x + k alpha (up to 0.75 here)
    and only the final clip brings them back: every queried iterate must stay in the ball."""
    model, x, y = ConstantSign(), _x(), torch.zeros(3, dtype=torch.long)
    eps, steps = 0.1, 10
    x_adv = PGD(model, eps, steps=steps, random_start=False).perturb(x, y)
    queried = model.seen[:steps]  # the gradient queries (then one forward to score the run)
    assert len(model.seen) == steps + 1
    for k, q in enumerate(queried):
        want = x + min(k * 2.5 * eps / steps, eps)  # hand computation: + alpha, capped at eps
        assert torch.allclose(q, want, atol=1e-6), (k, float((q - x).max()))
    assert torch.allclose(x_adv, x + eps, atol=1e-6)


def test_pgd_default_step_size():
    """Default alpha = 2.5 eps / steps (Madry et al.): the first step moves by exactly that."""
    for eps, steps in ((0.1, 10), (0.3, 20), (0.05, 3)):
        model, x, y = ConstantSign(), _x(), torch.zeros(3, dtype=torch.long)
        spec = AttackSpec("pgd", eps, steps=steps, params={"random_start": False})
        build_attack(model, spec).perturb(x, y)
        first = float((model.seen[1] - x).max())
        assert first == pytest.approx(min(2.5 * eps / steps, eps), abs=1e-6)
        assert float((model.seen[1] - x).min()) == pytest.approx(first, abs=1e-6)


def test_pgd_random_start_inside_ball_then_steps():
    model, x, y = ConstantSign(), _x(), torch.zeros(3, dtype=torch.long)
    eps, steps = 0.1, 4
    gen = torch.Generator().manual_seed(0)
    PGD(model, eps, steps=steps, generator=gen).perturb(x, y)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    start = x + (2 * u - 1) * eps  # the documented uniform start in the Linf ball
    assert torch.allclose(model.seen[0], start, atol=1e-6)
    for k in range(1, steps):
        want = x + torch.clamp(start - x + k * 2.5 * eps / steps, -eps, eps)
        assert torch.allclose(model.seen[k], want, atol=1e-6), k


def test_pgd_l2_projects_every_step():
    model, x, y = ConstantSign(), _x(), torch.zeros(3, dtype=torch.long)
    eps, steps = 0.5, 10
    PGD(model, eps, steps=steps, norm="l2", random_start=False).perturb(x, y)
    alpha = 2.5 * eps / steps
    for k, q in enumerate(model.seen[:steps]):
        norms = (q - x).flatten(1).norm(dim=1)
        assert torch.allclose(norms, torch.full((3,), min(k * alpha, eps)), atol=1e-5), k


# ------------------------------------------------------------------------------- parity


def _logits(correct: np.ndarray) -> np.ndarray:
    """Two-class logits whose argmax equals the label exactly where ``correct`` is True."""
    out = np.zeros((len(correct), 2), np.float32)
    out[correct, 0] = 1.0
    out[~correct, 1] = 1.0
    return out


def _case(clean_lost: int, transfer_lost: int, n: int = 1000):
    """Torch right on every sample; the int8 model wrong on the first ``*_lost`` samples."""
    y = np.zeros(n, np.int64)
    ref = _logits(np.ones(n, bool))
    lost = lambda k: _logits(np.arange(n) >= k)  # noqa: E731
    return lost(clean_lost), lost(transfer_lost), ref, ref.copy(), y


@pytest.mark.parametrize(
    "margins", [Margins(), Margins(clean=0.5, robust=3.0), Margins(clean=2.0, robust=0.1)]
)
def test_clean_margin_boundary(margins):
    at = round(margins.clean * 10)  # 1000 samples: 1 sample = 0.1 pt
    rec = parity("tflite-int8", *_case(at, 0), margins)
    assert rec["clean_drop_pts"] == pytest.approx(margins.clean) and rec["passed"] is True
    rec = parity("tflite-int8", *_case(at + 1, 0), margins)
    assert rec["passed"] is False
    assert f"drop {margins.clean + 0.1:.2f} pt, allowed {margins.clean:g})" in failure_message(
        "tflite-int8", rec
    )


@pytest.mark.parametrize(
    "margins", [Margins(), Margins(clean=0.5, robust=3.0), Margins(clean=2.0, robust=0.1)]
)
def test_robust_margin_boundary(margins):
    at = round(margins.robust * 10)
    rec = parity("onnx-int8", *_case(0, at), margins)
    assert rec["transfer_drop_pts"] == pytest.approx(margins.robust) and rec["passed"] is True
    rec = parity("onnx-int8", *_case(0, at + 1), margins)
    assert rec["passed"] is False and rec["clean_drop_pts"] == 0
    assert rec["margins"] == {"clean": margins.clean, "robust": margins.robust}


def test_export_run_passes_both_margins_to_the_gate():
    """ExportConfig's clean/robust margins reach the gate as Margins(clean, robust)."""
    from robustedge.export import ExportConfig

    assert ExportConfig().margins() == Margins() == Margins(clean=1.0, robust=2.0)
    assert ExportConfig(clean_margin=0.5, robust_margin=3.0).margins() == Margins(0.5, 3.0)


@pytest.mark.parametrize("fmt,tol", [("onnx", 1e-4), ("tflite-float32", 1e-3)])
def test_float_logit_tolerance_boundary(fmt, tol):
    n = 10
    y = np.zeros(n, np.int64)
    ref = _logits(np.ones(n, bool)) * 4.0  # scale 4: allowed diff 4 * tol
    for bump, ok in ((4 * tol * 0.99, True), (4 * tol * 1.02, False)):
        got = ref.copy()
        got[3, 1] += bump
        rec = parity(fmt, got, ref.copy(), ref, ref.copy(), y, Margins())
        assert rec["logit_scale"] == 4.0 and rec["passed"] is ok, (bump, rec)
        assert rec["max_abs_logit_diff"] == pytest.approx(bump, rel=1e-3)


# --------------------------------------------------------------------- prox, per layer


def test_prox_step_reaches_every_prunable_layer(digits):
    """LeNet-5 has three prunable layers. After every optimizer step of the prox phase each of
    them must equal the hand-computed prox of its pre-step weights: the reweighted soft
    threshold with step lr * lam (lam of the ``ball`` schedule), then the top-k projection onto
    the cubic ramp's sparsity (Lee & Lee 2021). Skipping any layer breaks the equality."""
    from robustedge.compress.common import PRUNERS, PruneContext, steps_per_epoch
    from robustedge.compress.config import CompressConfig
    from robustedge.compress.targets import prunable_params
    from robustedge.models import ModelSpec, build_model
    from robustedge.training.adversaries import build_adversary, ce_task_loss
    from robustedge.training.loop import epoch_batches

    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet5", digits.input_shape, digits.num_classes))
    n = 320
    x, y = torch.as_tensor(digits.x_train[:n]), torch.as_tensor(digits.y_train[:n])
    cfg = CompressConfig.from_keys(  # paper 1's prox: reweighted L1 soft threshold + top-k ball
        teacher="unused",
        sparsity=0.8,
        epochs=2,
        batch_size=64,
        lr=1e-2,
        penalty="reweighted",
        lam_schedule="ball",
        lazy_prox=False,
    )
    params = prunable_params(model)
    assert len(params) == 3
    trace: List[tuple] = []

    class Recording(PruneContext):
        def fit(self, optimizer, epochs, phase, *, after_step=None, **kw):
            def wrapped(m):
                before = {k: p.detach().clone() for k, p in self.params.items()}
                after_step(m)
                trace.append((before, {k: p.detach().clone() for k, p in self.params.items()}))

            return super().fit(optimizer, epochs, phase, after_step=wrapped, **kw)

    ctx = Recording(
        model=model,
        cfg=cfg,
        batches=epoch_batches(x, y, 64, 0),
        steps_per_epoch=steps_per_epoch(n, 64),
        adversary=build_adversary("none"),
        task_loss=ce_task_loss,
        params=params,
        input_shape=digits.input_shape,
    )
    outcome = PRUNERS.get("prox")(ctx)
    total = 2 * steps_per_epoch(n, 64)
    ramp = int(0.75 * total)
    assert len(trace) == total

    def u_of(w):  # the reweighted-L1 zeroing score of each weight
        a = w.abs()
        s = a.mean()
        return a * (a + 0.1 * s) / (s * s)

    first = trace[0][0]
    u = torch.cat([u_of(w).flatten() for w in first.values()])
    q = float(u.kthvalue(round(0.8 * u.numel())).values)
    lam = 0.25 * q / (cfg.lr * ramp)  # ball: a quarter of the target quantile over the ramp
    assert outcome.notes["final_lam"] == pytest.approx(lam, rel=1e-5)
    step = cfg.lr * lam
    for t, (before, after) in enumerate(trace, start=1):
        shrunk = {}
        for name, w in before.items():
            a, s = w.abs(), w.abs().mean()
            shrunk[name] = torch.sign(w) * torch.clamp(a - step * s * s / (a + 0.1 * s), min=0)
        wanted = 0.8 * (1 - (1 - min(t / ramp, 1.0)) ** 3)
        flat = torch.cat([v.abs().flatten() for v in shrunk.values()])
        zeroed = round(wanted * flat.numel())
        for name, v in shrunk.items():
            assert torch.allclose(after[name], v * (after[name] != 0), atol=1e-7), (t, name)
            assert torch.count_nonzero(v) >= torch.count_nonzero(after[name])
        got = sum(int((a == 0).sum()) for a in after.values())
        assert got >= zeroed, (t, got, zeroed)
        if zeroed:  # survivors are the largest shrunk magnitudes, over all layers together
            kept = torch.cat([after[k].abs().flatten() for k in shrunk])
            threshold = flat.kthvalue(zeroed).values
            assert bool((kept[kept != 0] >= threshold - 1e-7).all()), t
    for name in params:  # every layer was actually shrunk at some step (non-trivial check)
        assert any(not torch.equal(b[name], a[name]) for b, a in trace), name
    final = sum(int((p == 0).sum()) for p in params.values())
    assert final == round(0.8 * sum(p.numel() for p in params.values()))


# --------------------------------------------------------------------------- recipe cache


def _stages(root: Path, cfg: Dict[str, Dict], log: List[str], content: Dict[str, str]):
    """A small DAG shaped like a recipe plan: teacher -> student -> export -> device, teacher
    -> eval, and a manifold stage that depends on nothing."""
    from robustedge.recipe.runner import Stage

    def make(sid: str, up=()):
        path = root / sid / "out.txt"

        def execute():  # output: own config (or given content) + the upstream outputs
            log.append(sid)
            path.parent.mkdir(parents=True, exist_ok=True)
            text = content.get(sid, json.dumps(cfg.get(sid, {})))
            path.write_text(text + "".join((root / u / "out.txt").read_text() for u in up))

        return Stage(sid, sid.split("-")[0], cfg.get(sid, {}), execute, lambda: [path], up)

    return [
        make("teacher"),
        make("manifold"),
        make("eval-teacher", ("teacher",)),
        make("student-a", ("teacher",)),
        make("export-a", ("student-a",)),
        make("device-a", ("export-a",)),
    ]


def _run(root, cfg, content=None):
    from robustedge.recipe.runner import StageRunner

    log: List[str] = []
    res = StageRunner(root).run(_stages(root, cfg, log, content or {}))
    return {r.id: r.status for r in res}, log


def test_recipe_cache_redoes_dependants_of_a_changed_teacher(tmp_path):
    cfg = {"teacher": {"epochs": 1}, "manifold": {"z": 2}, "student-a": {"s": 0.5}}
    st, log = _run(tmp_path, cfg)
    assert set(st.values()) == {"done"} and len(log) == 6
    st, log = _run(tmp_path, cfg)
    assert set(st.values()) == {"cached"} and log == []
    cfg["teacher"] = {"epochs": 2}  # the teacher changes: everything downstream is redone
    st, log = _run(tmp_path, cfg)
    assert log == ["teacher", "eval-teacher", "student-a", "export-a", "device-a"]
    assert st["manifold"] == "cached" and st["teacher"] == "done"
    cfg["student-a"] = {"s": 0.8}  # a student changes: its chain only
    st, log = _run(tmp_path, cfg)
    assert log == ["student-a", "export-a", "device-a"]
    assert {st[k] for k in ("teacher", "manifold", "eval-teacher")} == {"cached"}


def test_recipe_cache_follows_output_digests(tmp_path):
    """A stage redone with byte-identical outputs leaves its dependants cached; an edited
    output of a cached stage makes it run again, and a new output digest reaches downstream."""
    cfg = {"teacher": {"epochs": 1}}
    _run(tmp_path, cfg)
    rec = tmp_path / "stages" / "teacher" / "stage.json"
    rec.unlink()  # as if the teacher crashed before its record: redone, same bytes
    st, log = _run(tmp_path, cfg)
    assert log == ["teacher"] and st["student-a"] == "cached"
    (tmp_path / "teacher" / "out.txt").write_text("edited by hand")
    st, log = _run(tmp_path, cfg, {"teacher": "new weights"})
    assert log == ["teacher", "eval-teacher", "student-a", "export-a", "device-a"]
    assert st["manifold"] == "cached"
    upstream = json.loads((tmp_path / "stages" / "student-a" / "stage.json").read_text())
    assert upstream["upstream"] == {"teacher": _digest(tmp_path, "teacher")}


def _digest(root: Path, sid: str) -> str:
    from robustedge.recipe.runner import digest_of

    return digest_of(json.loads((root / "stages" / sid / "stage.json").read_text())["outputs"])


def test_recipe_plan_wires_students_to_the_teacher(tmp_path):
    """In the real plan every student depends on the teacher and every export/eval/bench on
    its own model, and the teacher's train config is its cache key."""
    from robustedge.recipe import parse_recipe
    from robustedge.recipe.runner import input_hash
    from robustedge.recipe.stages import plan

    text = (
        "name: t\ndata: {name: digits}\n"
        "teacher:\n  train: {model: tiny, epochs: EPOCHS, adversary: none, eps: 0.0}\n"
        "compress:\n  - {name: p, method: prox, sparsity: [0.5, 0.8], epochs: 1}\n"
        "export: {formats: [onnx]}\n"
    )
    hashes = []
    for epochs in (1, 2):
        recipe = parse_recipe(text.replace("EPOCHS", str(epochs)), str(tmp_path / "r.yaml"))
        stages, _runs, _notes = plan(recipe, tmp_path / "out")
        by_id = {s.id: s for s in stages}
        assert by_id["student-p-s0.5"].upstream == ("teacher",)
        assert by_id["student-p-s0.8"].upstream == ("teacher",)
        assert by_id["export-p-s0.8"].upstream == ("student-p-s0.8",)
        assert by_id["export-teacher"].upstream == ("teacher",)
        hashes.append(input_hash(by_id["teacher"], {}))
    assert hashes[0] != hashes[1]


# ------------------------------------------------------------------- hostile checkpoints


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvilExec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('x')",))


@pytest.mark.parametrize("payload", [Evil, EvilExec])
def test_code_running_checkpoint_refused_in_one_line(tmp_path, payload):
    from robustedge.models import safe_torch_load

    marker = tmp_path / "PWNED"
    path = tmp_path / "last.pt"
    torch.save({"epoch": 0, "model": {"w": torch.zeros(2)}, "x": payload(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        safe_torch_load(path)
    msg = str(info.value)
    assert not marker.exists(), "unpickling ran code"
    assert "\n" not in msg and msg.startswith(f"refused checkpoint {path}")
    assert "weights_only=False" not in msg


def test_resume_from_code_running_checkpoint_runs_nothing(tmp_path):
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    marker = tmp_path / "PWNED"
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    torch.save({"epoch": 0, "x": Evil(marker)}, out / "checkpoint" / "last.pt")
    cfg = TrainConfig(model="tiny", adversary="none", eps=0.1, epochs=1, seed=0)
    with pytest.raises(RobustEdgeError) as info:
        train_run(cfg, out, resume=True)
    assert not marker.exists() and "\n" not in str(info.value)
    assert "refused checkpoint" in str(info.value)
