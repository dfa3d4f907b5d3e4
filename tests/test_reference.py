"""Hand-computed references for the algorithms whose realistic bugs the other tests missed.

Each test computes one step (or one result) independently of the implementation, on small
tensors, and compares: ADMM's Z / U / rho update (the dual sign), HYDRA's mask following its
scores, APGD against a per-sample re-implementation that records its restarts from the best
point, TRADES' and FGSM's steps, KD's loss, the latency percentiles against numpy on known
data, the bundle's full sha256 comparison, the epoch-seeded shuffle, a recipe target's own
Square settings and ONNX int8's calibration on every input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

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


# ---------------------------------------------------------------- latency summary


def test_latency_percentiles_are_the_numpy_ones_on_known_data():
    """1..100 ms: p50 = 50.5, p90 = 90.1, p99 = 99.01 (linear interpolation), mean 50.5,
    min 1; shuffled input gives the same numbers."""
    from robustedge.device.board.measure import summarize

    times = np.random.default_rng(0).permutation(np.arange(1, 101)) / 1e3
    lat = summarize(times, warmup=3, threads=1, emulated=False)
    assert (lat.p50_ms, lat.p90_ms, lat.p99_ms) == pytest.approx((50.5, 90.1, 99.01))
    assert lat.mean_ms == pytest.approx(50.5) and lat.min_ms == pytest.approx(1.0)
    assert (lat.warmup, lat.runs, lat.threads) == (3, 100, 1)
    # two slow outliers in 200 runs moves p99 (the 99th percentile), not p50
    times = np.full(200, 0.002)
    times[-2:] = 1.0  # np.percentile index 0.99 * 199 = 197.01: 1 % of the way to 1000 ms
    lat = summarize(times, 0, 1, False)
    assert lat.p50_ms == pytest.approx(2.0) and lat.p90_ms == pytest.approx(2.0)
    assert lat.p99_ms == pytest.approx(float(np.percentile(times * 1e3, 99)))
    assert lat.p99_ms == pytest.approx(2.0 + 0.01 * 998.0)


# ---------------------------------------------------------------- bundle integrity


@pytest.mark.parametrize("how", ["truncated", "empty", "upper", "missing"])
def test_bundle_sha256_compared_in_full(bundle, how):
    import json

    from robustedge.device.board.bundle_format import BundleError, verify_bundle

    verify_bundle(bundle)
    man_path = bundle / "manifest.json"
    man = json.loads(man_path.read_text())
    rel = sorted(man["files"])[0]
    sha = man["files"][rel]["sha256"]
    man["files"][rel]["sha256"] = {
        "truncated": sha[:16],
        "empty": "",
        "upper": sha[:-1] + ("0" if sha[-1] != "0" else "1"),
        "missing": None,
    }[how]
    man_path.write_text(json.dumps(man))
    with pytest.raises(BundleError, match="sha256|manifest"):
        verify_bundle(bundle)


# ---------------------------------------------------------------- data order


def test_epoch_batches_reshuffle_every_epoch_and_follow_the_seed():
    from robustedge.training import epoch_batches

    x = torch.arange(40).float().view(40, 1)
    y = torch.arange(40)
    order = lambda b, e: torch.cat([yy for _, yy in b(e)]).tolist()  # noqa: E731
    b0 = epoch_batches(x, y, 8, seed=0)
    e0, e1, e0b = order(b0, 0), order(b0, 1), order(b0, 0)
    assert sorted(e0) == list(range(40)) and sorted(e1) == list(range(40))
    assert e0 == e0b  # resumable: the order is a function of (seed, epoch)
    assert e0 != e1  # a fresh shuffle every epoch
    assert order(epoch_batches(x, y, 8, seed=1), 0) != e0
    # torch's DistributedSampler with seed * 100003, one replica
    g = torch.Generator().manual_seed(0 * 100003 + 1)
    assert e1 == torch.randperm(40, generator=g).tolist()
    assert [len(yy) for _, yy in b0(0)] == [8] * 5


# ---------------------------------------------------------------- recipe per-target overrides


def test_recipe_target_overrides_apply_to_that_target_only():
    from robustedge.recipe import parse_recipe
    from robustedge.recipe.stages import bench_config

    text = """\
name: t
data: {name: digits}
teacher:
  train: {model: tiny, epochs: 1, adversary: none, eps: 0.0}
export: {formats: [onnx]}
devices:
  square_queries: 300
  square_n: 40
  runs: 250
  targets:
    - {target: local, square_queries: 50}
    - {target: qemu-aarch64, square_n: 7}
"""
    r = parse_recipe(text)
    local, qemu = r.devices.targets
    a, b = bench_config(r, local), bench_config(r, qemu)
    assert (a.square_queries, a.square_n, a.runs) == (50, 40, 250)
    assert (b.square_queries, b.square_n, b.runs) == (300, 7, 250)
    assert a.format == b.format == r.bench_format()


# ---------------------------------------------------------------- ONNX int8 calibration


def test_onnx_int8_calibrates_on_every_input(tmp_path):
    """The input's activation range comes from all calibration inputs: only the last one of
    30 reaches 1.0 (the rest stay below 0.1), so the input's QDQ scale must cover 1.0."""
    pytest.importorskip("onnxruntime")
    from robustedge.export.onnx_quant import quantize_onnx

    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(8, 3)).eval()
    src = tmp_path / "m.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 2, 2), str(src), input_names=["input"], dynamo=False)
    calib = np.random.default_rng(0).uniform(0, 0.1, size=(30, 1, 2, 2)).astype(np.float32)
    calib[-1] = 1.0
    out = quantize_onnx(src, tmp_path / "q.onnx", "input", calib)
    top = _input_top(out, "input")
    assert 0.99 <= top < 1.1, f"calibration missed the inputs that reach 1.0 (range up to {top})"


def _input_top(path, input_name):
    """The largest value the int8 model's input QuantizeLinear represents."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    q_in = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == input_name)
    scale = float(inits[q_in.input[1]])
    zero = int(inits[q_in.input[2]]) if len(q_in.input) > 2 else 0
    return (127 - zero) * scale


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


# ---------------------------------------------------------------- MACs


def test_macs_by_hand_with_groups_stride_and_zeros():
    """conv 2->4 3x3 pad 1 on 5x5: 4*25*(2*9) = 1800; depthwise 4 groups 3x3 stride 2 pad 1 on
    5x5 -> 3x3: 4*9*9 = 324; linear 36 -> 3: 108. ``nonzero`` scales each layer by its density
    (half the linear weights zeroed: 54)."""
    from robustedge.models.macs import count_macs

    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),
        nn.Flatten(),
        nn.Linear(36, 3),
    )
    with torch.no_grad():
        for m in net:
            if hasattr(m, "weight"):
                m.weight.fill_(0.5)
        net[3].weight[:, :18] = 0.0
    got = count_macs(net, (2, 5, 5))
    assert got == {"dense": 1800 + 324 + 108, "nonzero": 1800 + 324 + 54}
    assert net.training  # the mode is restored


# ---------------------------------------------------------------- labels at their edges


def test_weaker_than_default_label_at_its_edges():
    """None exactly at the default budget (queries x restarts) on every image; one query or
    one image fewer, or no Square at all, is labelled with what ran."""
    from robustedge.config import default_of
    from robustedge.device.board.config import BenchConfig
    from robustedge.device.board.measure import weaker_than_default as weaker

    q = default_of(BenchConfig, "square_queries")
    r = default_of(BenchConfig, "square_restarts")
    assert (q, r) == (1000, 1)
    assert weaker(q, 1, 450, 450) is None
    assert weaker(q + 1, 1, 450, 450) is None
    assert weaker(q // 2, 2, 450, 450) is None  # the same budget split over two restarts
    assert weaker(q, 1, 449, 450) == "weaker than default: Square-1000 on 449 of 450 images"
    assert weaker(q - 1, 1, 450, 450) == "weaker than default: Square-999 on 450 of 450 images"
    assert weaker(q // 2 - 1, 2, 450, 450) == (
        "weaker than default: Square-499x2 on 450 of 450 images"
    )
    assert weaker(0, 1, 450, 450) == "weaker than default: no on-board Square attack"


def test_headline_is_the_lowest_figure_at_the_smallest_eps():
    """Suites first (the lowest of those at the smallest eps), else the strongest single attack
    at the smallest eps; on-manifold rows (eta) never; None without a robust figure."""
    from pathlib import Path

    from robustedge.report.collect import RunInfo, headline

    def run(accuracy, suites=()):
        suites = {k: {"suite": k.split(" ")[0], "label": f"worst of {k}", "n": 50} for k in suites}
        return RunInfo("m", Path("m"), "student", "prox", False, 0.9, 0.9, accuracy, suites)

    acc = {"pgd eps=0.1": 0.5, "square eps=0.1": 0.45, "pgd eps=0.05": 0.7, "fgsm eps=0.05": 0.75}
    acc |= {"onmanifold eta=0.01": 0.1}
    h = headline(run(acc))
    assert (h.key, h.acc, h.is_suite) == ("pgd eps=0.05", 0.7, False)
    assert h.label == "pgd eps=0.05 (strongest single attack; no suite run)"
    acc |= {"worst-case eps=0.1": 0.4, "aa eps=0.1": 0.35, "worst-case eps=0.2": 0.1}
    h = headline(run(acc, ["worst-case eps=0.1", "aa eps=0.1", "worst-case eps=0.2"]))
    assert (h.key, h.acc, h.is_suite) == ("aa eps=0.1", 0.35, True)
    assert h.label == "aa: worst of aa eps=0.1 (eps=0.1, n=50)"
    assert headline(run({"onmanifold eta=0.3": 0.2})) is None


def test_budget_probes_meet_a_limit_equal_to_the_measurement():
    """A candidate whose measurement equals the limit meets the budget; a hair below does
    not (the weight probe for flash, the channel probe for MACs / parameters)."""
    from robustedge.compress.budget.flash import SparsityProbe, stored_weights
    from robustedge.compress.budget.search import ChannelProbe
    from robustedge.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet5", (1, 8, 8), 10))
    value = SparsityProbe(model, 0.0, stored_weights, grid=10)(5).value
    assert SparsityProbe(model, value, stored_weights, grid=10)(5).meets
    assert not SparsityProbe(model, value - 1e-6, stored_weights, grid=10)(5).meets
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    value = ChannelProbe(model, (1, 8, 8), 0.0, count, grid=8)(4).value
    assert ChannelProbe(model, (1, 8, 8), value, count, grid=8)(4).meets
    assert not ChannelProbe(model, (1, 8, 8), value - 1e-6, count, grid=8)(4).meets


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
    top = _input_top(run / "export" / "model_int8.onnx", "input")
    assert 0.99 <= top < 1.1, top


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
