"""Hand-computed references for the algorithms whose realistic bugs the other tests missed.

Each test computes one step (or one result) independently of the implementation, on small
tensors, and compares: ADMM's Z / U / rho update (the dual sign), HYDRA's mask following its
scores, APGD against a per-sample re-implementation that records its restarts from the best
point, TRADES' and FGSM's steps, KD's loss, magnitude pruning, FGSM-AT, Square's query count
and ONNX int8's calibration through export. Numbers, units, integrity and paths at their edges:
test_reference_edges.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from test_reference_edges import onnx_input_top

# ---------------------------------------------------------------- ADMM


def test_admm_update_by_hand():
    """Z = top-k(W + U), U <- U + W - Z (the scaled dual's sign), rho *= growth; penalty
    rho/2 ||W - Z + U||^2, all on a 4-weight layer at 50 % sparsity (global scope)."""
    from robustedge.compress.method_admm import ADMMState

    w = nn.Parameter(torch.tensor([[0.5, -2.0, 0.1, 1.0]]))
    st = ADMMState({"w": w}, sparsity=0.5, scope="global", rho=0.1, growth=2.0)
    assert st.Z["w"].tolist() == [[0.0, -2.0, 0.0, 1.0]]  # the 2 largest |w| kept
    assert st.U["w"].tolist() == [[0.0, 0.0, 0.0, 0.0]]
    # penalty = 0.05 * (0.5^2 + 0.1^2) = 0.05 * 0.26
    assert float(st.penalty().detach()) == pytest.approx(0.013)
    with torch.no_grad():  # a training step moved the weights
        w.copy_(torch.tensor([[1.5, -0.5, 0.2, 1.0]]))
    st.update()
    # W + U = W (U = 0): top-2 of |1.5, 0.5, 0.2, 1.0| -> 1.5 and 1.0
    assert st.Z["w"].tolist() == [[1.5, 0.0, 0.0, 1.0]]
    # U = 0 + W - Z = [0, -0.5, 0.2, 0]
    assert torch.allclose(st.U["w"], torch.tensor([[0.0, -0.5, 0.2, 0.0]]))
    assert st.rho == pytest.approx(0.2)
    # second update: W + U = [1.5, -1.0, 0.4, 1.0]; the top-2 magnitudes tie between
    # -1.0 and 1.0, so move the weights to break the tie: W = [1.5, -0.6, 0.2, 1.0]
    with torch.no_grad():
        w.copy_(torch.tensor([[1.5, -0.6, 0.2, 1.0]]))
    st.update()  # W + U = [1.5, -1.1, 0.4, 1.0] -> Z = [1.5, -1.1, 0, 0]
    assert torch.allclose(st.Z["w"], torch.tensor([[1.5, -1.1, 0.0, 0.0]]))
    # U = [0, -0.5, 0.2, 0] + [1.5, -0.6, 0.2, 1.0] - [1.5, -1.1, 0, 0] = [0, 0, 0.4, 1.0]
    assert torch.allclose(st.U["w"], torch.tensor([[0.0, 0.0, 0.4, 1.0]]), atol=1e-6)
    assert st.rho == pytest.approx(0.4)
    # penalty = 0.2 * ||W - Z + U||^2 = 0.2 * ||[0, 0.5, 0.6, 2.0]||^2 = 0.2 * 4.61
    assert float(st.penalty().detach()) == pytest.approx(0.922, rel=1e-5)
    # residual ||W - Z|| / ||W|| = sqrt(0.5^2 + 0.2^2 + 1) / sqrt(1.5^2 + 0.6^2 + 0.2^2 + 1)
    assert st.residual() == pytest.approx(math.sqrt(1.29 / 3.65), rel=1e-5)


def test_admm_growth_is_spread_over_long_phases():
    """rho grows 1.3x per epoch for <= 10 epochs, and at most 1.3^10 in all over longer ones."""
    from robustedge.compress.method_admm import RHO_GROWTH, RHO_UPDATES

    assert (RHO_GROWTH, RHO_UPDATES) == (1.3, 10)
    for epochs, per_epoch in ((4, 1.3), (10, 1.3), (40, 1.3**0.25)):
        growth = RHO_GROWTH ** min(1.0, RHO_UPDATES / max(1, epochs))
        assert growth == pytest.approx(per_epoch)


# ---------------------------------------------------------------- HYDRA


def test_hydra_masks_follow_their_scores():
    """The cached top-k mask must be recomputed whenever a score changes (in place, as an
    optimizer step does), and the init is sqrt(6 / fan_in) * W / max|W|."""
    from robustedge.compress.method_hydra import ScoreSet

    w = nn.Parameter(torch.tensor([[4.0, -1.0], [2.0, 0.5]]))
    ss = ScoreSet({"w": w}, sparsity=0.5, scope="global")
    fan_in = 2
    want = math.sqrt(6.0 / fan_in) * torch.tensor([[1.0, -0.25], [0.5, 0.125]])
    assert torch.allclose(ss.scores[0].detach(), want)
    assert ss.masks()["w"].tolist() == [[True, False], [True, False]]
    opt = torch.optim.SGD(ss.parameters(), lr=1.0)
    ss.scores[0].grad = torch.tensor([[2.0, -3.0], [0.0, 0.0]])  # pushes |s_01| above s_00
    opt.step()  # scores: [[1.732 - 2, -0.433 + 3], [0.866, 0.217]]
    assert ss.masks()["w"].tolist() == [[False, True], [True, False]]
    with torch.no_grad():
        ss.scores[0][1, 1] = 10.0
    assert ss.masks()["w"].tolist() == [[False, True], [False, True]]


# ---------------------------------------------------------------- APGD


def _apgd_reference(model, x, y, eps, steps, seed):
    """APGD-CE, one restart, sample by sample in plain Python control flow (Croce & Hein 2020):
    returns (points, number of reductions where the current point was not the best one)."""
    from robustedge.attacks.apgd import checkpoints

    gen = torch.Generator().manual_seed(seed)
    t = 2 * torch.rand(x.shape, generator=gen, dtype=torch.float32).to(x.dtype) - 1
    checks = set(checkpoints(steps))

    def proj(z, x0):
        return torch.clamp(x0 + torch.clamp(z - x0, -eps, eps), 0.0, 1.0)

    def lg(z, y0):
        z = z.clone().requires_grad_(True)
        logits = model(z[None])
        loss = F.cross_entropy(logits, y0[None])
        (g,) = torch.autograd.grad(loss, z)
        return float(loss.detach()), g, int(logits.argmax()) != int(y0)

    out, restarts_from_best = [], 0
    for k in range(len(x)):
        x0, y0 = x[k], y[k]
        tk = t[k] / t[k].abs().max()
        cur = proj(x0 + eps * tk, x0)
        loss, g, fooled = lg(cur, y0)
        first_fool = cur.clone() if fooled else None
        best, best_g, best_loss = cur.clone(), g.clone(), loss
        eta, prev, prev_loss, ups = 2 * eps, cur.clone(), loss, 0
        best_at_check, reduced_at_check, last = best_loss, True, 0
        for i in range(steps):
            a = 0.75 if i > 0 else 1.0
            z = proj(cur + eta * g.sign(), x0)
            nxt = proj(cur + a * (z - cur) + (1 - a) * (cur - prev), x0)
            prev, cur = cur, nxt
            loss, g, f = lg(cur, y0)
            if f and first_fool is None:
                first_fool = cur.clone()
            ups += loss > prev_loss
            prev_loss = loss
            if loss > best_loss:
                best, best_g, best_loss = cur.clone(), g.clone(), loss
            if i + 1 in checks:
                reduce = ups < 0.75 * (i + 1 - last) or (
                    not reduced_at_check and best_at_check >= best_loss
                )
                if reduce:
                    eta /= 2
                    if not torch.equal(cur, best):
                        restarts_from_best += 1
                    cur, g = best.clone(), best_g.clone()
                reduced_at_check, best_at_check, ups, last = reduce, best_loss, 0, i + 1
        out.append(first_fool if first_fool is not None else best)
    return torch.stack(out), restarts_from_best


class _Recorder(nn.Module):
    """Calls ``net`` and records every input it is queried at (the attack's trajectory)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.net(x)


def test_apgd_follows_a_per_sample_reference_step_by_step():
    """Every point APGD-CE queries (start, 30 momentum steps, restarts from the best point after
    each step halving) equals the per-sample reference's, on a model that is right on every
    input (labels = its own predictions), at an eps where only some inputs get fooled."""
    from robustedge.attacks import build_attack
    from robustedge.attacks.base import AttackSpec

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).eval()
    x = torch.rand(8, 1, 2, 3)
    with torch.no_grad():
        y = net(x).argmax(1)
    eps, steps = 0.1, 30
    ref = _Recorder(net)
    want, restarts = _apgd_reference(ref, x, y, eps, steps, seed=5)
    assert restarts > 0, "the data must exercise a restart from a point that is not the best"
    assert 0 < int((net(want).argmax(1) != y).sum()) < len(x)
    impl = _Recorder(net)
    spec = AttackSpec("apgd-ce", eps, steps=steps, restarts=1)
    got = build_attack(impl, spec, generator=torch.Generator().manual_seed(5)).perturb(x, y)
    assert len(impl.seen) == steps + 1 and all(len(q) == len(x) for q in impl.seen)
    per_sample = torch.stack(ref.seen).view(len(x), steps + 1, *x.shape[1:])
    for k in range(len(x)):
        for i in range(steps + 1):
            assert torch.allclose(impl.seen[i][k], per_sample[k, i], atol=1e-6), (k, i)
    assert torch.allclose(got, want, atol=1e-6)


# ---------------------------------------------------------------- FGSM / TRADES / KD


class _Lin(nn.Module):
    """logits = x.flatten() @ W: the input gradient is known in closed form."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w


def test_fgsm_step_by_hand():
    """CE gradient of a linear model: W (softmax - onehot); FGSM adds eps * sign of it, then
    clips to [0, 1]."""
    from robustedge.attacks import FGSM

    w = torch.tensor([[1.0, -1.0], [-2.0, 0.5], [0.0, 0.0]])
    model = _Lin(w)
    x = torch.tensor([[0.5, 0.95, 0.3]])
    y = torch.tensor([0])
    p = torch.softmax(x @ w, 1)
    grad = (p - F.one_hot(y, 2).float()) @ w.T  # d CE / d x
    want = torch.clamp(x + 0.1 * grad.sign(), 0, 1)
    got = FGSM(model, 0.1).perturb(x, y)
    assert torch.allclose(got, want)
    assert got[0, 2] == x[0, 2]  # zero gradient: the pixel does not move
    assert got[0, 1] == pytest.approx(1.0)  # clipped at the top of the range


def test_trades_attack_one_step_and_objective_by_hand():
    """One TRADES step: x + 0.001 noise (from the generator), then 2.5 eps / steps along the
    sign of grad KL(f(x) || f(x')); the training objective is CE(f(x)) + beta KL(f(x)||f(x'))."""
    from robustedge.attacks.trades import TradesKL
    from robustedge.training import build_adversary

    w = torch.tensor([[1.0, -1.0, 0.5], [-2.0, 0.5, 1.0]])
    model = _Lin(w)
    x = torch.tensor([[0.4, 0.6]])
    gen = torch.Generator().manual_seed(1)
    start = torch.clamp(
        x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)), 0, 1
    )
    p = torch.softmax(x @ w, 1)
    q = torch.softmax(start @ w, 1)
    # d/dx' sum p log(p/q(x')) = W (q - p)
    grad = (q - p) @ w.T
    eps, steps = 0.2, 5  # step 2.5 eps / steps = 0.1, inside the ball
    want = torch.clamp(torch.clamp(start + 0.1 * grad.sign(), x - eps, x + eps), 0, 1)
    rec = _Recorder(model)
    TradesKL(rec, eps, steps=steps, generator=gen).perturb(x, torch.zeros(1).long())
    # queries: the clean input, the start, then one per step
    assert len(rec.seen) == steps + 1 and torch.equal(rec.seen[0], x)
    assert torch.allclose(rec.seen[1], start) and torch.allclose(rec.seen[2], want, atol=1e-7)

    adv = build_adversary("trades", eps=eps, steps=1, beta=6.0)
    x_adv = torch.tensor([[0.5, 0.5]])
    y = torch.tensor([2])
    pa = torch.softmax(x_adv @ w, 1)
    kl = float((p * (p.log() - pa.log())).sum())
    ce = float(-torch.log_softmax(x @ w, 1)[0, 2])
    from robustedge.training.adversaries import ce_task_loss

    got_obj = adv.objective(model, x, y, x_adv, ce_task_loss)
    assert float(got_obj) == pytest.approx(ce + 6.0 * kl, rel=1e-5)


def test_kd_loss_by_hand():
    """(1 - a) CE + a t^2 KL(softmax(T/t) || softmax(S/t)), batch mean, on two samples."""
    from robustedge.compress.distill import kd_loss

    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    t = torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    y = torch.tensor([0, 2])
    a, temp = 0.3, 2.0
    ce = sum(-math.log(math.exp(s[i, y[i]]) / sum(math.exp(v) for v in s[i])) for i in range(2)) / 2
    kl = 0.0
    for i in range(2):
        ps = [math.exp(v / temp) for v in s[i].tolist()]
        pt = [math.exp(v / temp) for v in t[i].tolist()]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        kl += sum(b * math.log(b / c) for b, c in zip(pt, ps))
    kl /= 2
    want = (1 - a) * ce + a * temp * temp * kl
    assert float(kd_loss(s, t, y, a, temp)) == pytest.approx(want, rel=1e-6)


# ---------------------------------------------------------------- magnitude pruning


def _ctx(model, cfg, x, y):
    from robustedge.compress.common import PruneContext, steps_per_epoch
    from robustedge.compress.targets import prunable_params
    from robustedge.training import epoch_batches
    from robustedge.training.adversaries import build_adversary, ce_task_loss

    return PruneContext(
        model=model,
        cfg=cfg,
        batches=epoch_batches(x, y, 16, 0),
        steps_per_epoch=steps_per_epoch(len(x), 16),
        adversary=build_adversary("none"),
        task_loss=ce_task_loss,
        params=prunable_params(model),
        input_shape=tuple(x.shape[1:]),
    )


# ---------------------------------------------------------------- FGSM-AT (Wong et al. 2020)


def test_fgsm_at_examples_by_hand():
    """FGSM-AT: a uniform start in [-eps, eps] drawn from the adversary's seeded generator,
    one signed step of 1.25 eps from there, projected back onto the eps-ball and [0, 1]."""
    from robustedge.training import build_adversary

    x = torch.full((2, 1, 2, 2), 0.5)
    x[1, 0, 0, 0] = 0.02  # near the bottom of the range: the start is clipped there
    y = torch.tensor([0, 1])
    eps = 0.1
    adv = build_adversary("fgsm", eps=eps)
    adv.seed(3)
    g = torch.Generator()
    g.manual_seed(3 * 1_000_003 + 1)  # the stream of (seed 3, rank 0)
    u = torch.rand(x.shape, generator=g)
    x0 = torch.clamp(x + (2 * u - 1) * eps, 0, 1)
    # a model without input gradient: FGSM's step is sign(0) = 0, the example is the start
    flat = _Lin(torch.zeros(4, 2))
    assert torch.allclose(adv.examples(flat, x, y), x0)
    assert float((x0 - x).min()) < -0.03 and float((x0 - x).max()) > 0.03  # both directions
    # a linear model: d CE / dx = W (p - onehot); the step is 1.25 eps along its sign
    w = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [2.0, 0.0], [0.0, -3.0]])
    adv.seed(3)
    got = adv.examples(_Lin(w), x, y)
    p = torch.softmax(x0.flatten(1) @ w, 1)
    grad = ((p - F.one_hot(y, 2).float()) @ w.T).view(x.shape)
    step = torch.clamp(x0 + 1.25 * eps * grad.sign(), 0, 1)
    want = torch.clamp(torch.min(torch.max(step, x - eps), x + eps), 0, 1)
    assert torch.allclose(got, want, atol=1e-7)


# ---------------------------------------------------------------- Square


def test_square_counts_exactly_the_queries_it_makes():
    """The per-image query counts Square reports add up to the rows its model really scored
    (each row is one query of one image), images fooled early stop being queried, and every
    image fooled is reported with margin <= 0 at its returned point."""
    from robustedge.attacks.square_core import margin_loss, square_linf_numpy

    rng = np.random.default_rng(0)
    w = rng.normal(size=(3 * 6 * 6, 5)).astype(np.float32)
    x = rng.uniform(size=(20, 3, 6, 6)).astype(np.float32)
    y = (x.reshape(20, -1) @ w).argmax(1)
    rows = [0]

    def predict(batch):
        rows[0] += len(batch)
        return batch.reshape(len(batch), -1) @ w

    x_adv, q = square_linf_numpy(predict, x, y, 0.1, n_queries=60, rng=1, restarts=2)
    assert int(q.sum()) == rows[0]
    fooled = margin_loss(x_adv.reshape(20, -1) @ w, y) <= 0
    assert 0 < fooled.sum() < 20  # some fooled early, some never: both kinds counted
    assert q[fooled].min() < q[~fooled].min()
    assert q[~fooled].tolist() == [1 + 2 * 60] * int((~fooled).sum())  # every budget used


# ---------------------------------------------------------------- slower ones last (a trained
# model or an export; the planted-bug runs stop at the first failure)


def test_export_calibrates_onnx_int8_on_every_input_it_records(tiny_run, tmp_path):
    """Through the export pipeline: 30 caller-supplied calibration inputs, only the last one
    reaching 1.0; export.json records 30 and the int8 model's input range covers 1.0."""
    pytest.importorskip("onnxruntime")
    import json
    import shutil

    from robustedge.export import ExportConfig, export_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    calib = np.random.default_rng(0).uniform(0, 0.1, size=(30, 1, 8, 8)).astype(np.float32)
    calib[-1] = 1.0
    cfg = ExportConfig(formats="onnx,onnx-int8", transfer_steps=2, transfer_restarts=1)
    export_run(run, cfg, calib_x=calib)
    rec = json.loads((run / "export" / "export.json").read_text())
    assert rec["calibration"]["samples"] == 30
    assert rec["calibration"]["range"] == [pytest.approx(float(calib.min())), 1.0]
    top = onnx_input_top(run / "export" / "model_int8.onnx", "input")
    assert 0.99 <= top < 1.1, top
    # weights in 7 bits (reduce_range): x86 CPUs without VNNI saturate int8 x int8 products
    # summed in int16 (VPMADDUBSW); with the full range this model fails its parity gate there
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(run / "export" / "model_int8.onnx")).graph
    weights = [
        numpy_helper.to_array(i) for i in g.initializer if i.data_type == onnx.TensorProto.INT8
    ]
    weights = [w for w in weights if w.ndim > 1]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_keeps_the_largest_weights(digits, scope):
    """The real ``PRUNERS['magnitude']`` on LeNet-5: the survivors are exactly the top
    ``keep_count`` magnitudes (over all prunable layers, or per layer), computed here by
    sorting; the fine-tune epochs are the phase's plus the fine-tune's."""
    from robustedge.compress.common import PRUNERS
    from robustedge.compress.config import CompressConfig
    from robustedge.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet5", digits.input_shape, digits.num_classes))
    x, y = torch.as_tensor(digits.x_train[:32]), torch.as_tensor(digits.y_train[:32])
    cfg = CompressConfig.from_keys(
        teacher="unused", method="magnitude", sparsity=0.7, scope=scope, epochs=2,
        finetune_epochs=3,
    )  # fmt: skip
    ctx = _ctx(model, cfg, x, y)
    before = {n: p.detach().clone() for n, p in ctx.params.items()}
    out = PRUNERS.get("magnitude")(ctx)
    assert out.finetune_epochs == 5
    groups = [list(before)] if scope == "global" else [[n] for n in before]
    for names in groups:
        flat = torch.cat([before[n].abs().flatten() for n in names])
        keep = flat.numel() - round(0.7 * flat.numel())
        threshold = flat.sort(descending=True).values[keep - 1]
        for n in names:
            want = before[n].abs() >= threshold  # no ties among random float weights
            assert torch.equal(out.masks[n], want), n
            assert torch.equal(ctx.params[n].detach(), before[n] * want), n


def test_calibration_inputs_by_hand(trained_tiny, digits):
    """A seeded draw of n training inputs; the first round(fraction * n) replaced by PGD
    versions crafted against their own labels (PGD computed here with the same seed)."""
    from robustedge.attacks import AttackSpec, build_attack
    from robustedge.export.evalsets import calibration_inputs

    model = trained_tiny[0]
    xs, ys = digits.x_train[:300], digits.y_train[:300]
    spec = AttackSpec("pgd", 0.1, steps=3, restarts=1)
    got = calibration_inputs(model, xs, ys, 40, 0.25, spec, seed=7)
    idx = np.random.default_rng(7).permutation(300)[:40]
    assert got.shape == (40, 1, 8, 8) and got.dtype == np.float32
    assert np.array_equal(got[10:], xs[idx[10:]])  # 30 clean
    attack = build_attack(model, spec, generator=torch.Generator().manual_seed(7))
    adv = attack.perturb(torch.as_tensor(xs[idx[:10]]), torch.as_tensor(ys[idx[:10]]))
    assert np.allclose(got[:10], adv.numpy(), atol=1e-6)
    assert np.abs(got[:10] - xs[idx[:10]]).max() == pytest.approx(0.1, abs=1e-6)


def test_digits_are_the_raw_images_over_16_in_the_fixed_split(digits):
    """Every digits image is sklearn's raw 0..16 image divided by 16 (so [0, 1] with 1.0
    reached), each train and test image one of the 1,797, labels kept with their images."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    by_image = {
        (raw.images[i] / 16.0).astype(np.float32).tobytes(): int(raw.target[i])
        for i in range(len(raw.target))
    }
    for x, y in ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test)):
        assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8)
        assert float(x.max()) == 1.0 and float(x.min()) == 0.0
        # an image shared by two digits cannot be told apart: those keep either label
        hits = [by_image.get(img[0].tobytes()) for img in x]
        assert all(h is not None for h in hits)
        assert np.mean(np.asarray(hits) == y) > 0.99
