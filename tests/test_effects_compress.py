"""Effect tests for `robustedge compress` options and CompressConfig keys (tests/option_effects.py).

The CLI builds the same CompressConfig (``CompressConfig.from_keys``), so each setting is
checked on what the config drives: the pipeline's parts (teacher, student, adversary, task
loss, batches) or a whole run of the session's tiny teacher on a small cut of digits (192
training, 32 test images: a run takes a fraction of a second). Expected values are computed
here by hand or come from the same run without the setting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from conftest import SMALL_DIGITS
from robustedge.compress import CompressConfig, compress_run, read_masks
from robustedge.compress.pipeline import build_student, load_teacher, make_adversary, make_context
from robustedge.compress.targets import prunable_params
from robustedge.models import ModelSpec, build_model, count_params, load_model

N_TRAIN, N_TEST = SMALL_DIGITS


@pytest.fixture(scope="module")
def small(small_digits) -> str:
    return small_digits


def _fast(tiny_run, small, **kw) -> CompressConfig:
    """A cheap run of the tiny teacher on the small data (no adversary unless given)."""
    base = dict(teacher=str(tiny_run), data="npz", data_dir=small, adversary="none", epochs=1)
    base.update(finetune_epochs=0, batch_size=64, sparsity=0.5)
    return CompressConfig.from_keys(**{**base, **kw})


def _params(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_teacher_data_and_data_dir_are_what_the_student_starts_from_and_trains_on(
    tiny_run, small, tmp_path
):
    """teacher: the student starts as a copy of that run's model; data / data_dir: the run
    trains and evaluates on the npz file (32 test images, not digits' 360), recorded as such;
    without them the teacher's data set is used."""
    cfg = CompressConfig(teacher=str(tiny_run), data="npz", data_dir=small)
    teacher, spec, _, data = load_teacher(cfg)
    assert (data.name, len(data.x_train), len(data.x_test)) == ("npz", N_TRAIN, N_TEST)
    want = _params(load_model(tiny_run)[0])
    assert all(torch.equal(v, want[k]) for k, v in _params(teacher).items())
    _, student = build_student(cfg, teacher, spec, data)
    assert all(torch.equal(v, want[k]) for k, v in _params(student).items())
    default = load_teacher(CompressConfig(teacher=str(tiny_run)))[3]
    assert default.name == "digits" and len(default.x_test) > N_TEST
    m = compress_run(_fast(tiny_run, small), tmp_path / "s", eval_attacks=())
    assert m["n"] == N_TEST and m["teacher"]["run"] == str(tiny_run)
    saved = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())
    assert (saved["data"], saved["data_dir"], saved["teacher"]) == ("npz", small, str(tiny_run))


def test_model_and_model_kwargs_build_a_new_student(tiny_run, small, tmp_path):
    """model / model_kwargs (--model-arg width=4): the student is that architecture, built
    afresh (not the teacher's weights), saved with its spec and counted as such."""
    m = compress_run(
        _fast(tiny_run, small, model="tiny", model_kwargs={"width": 4}),
        tmp_path / "s",
        eval_attacks=(),
    )
    student, spec = load_model(tmp_path / "s")
    assert spec.name == "tiny" and spec.kwargs == {"width": 4} and student[0].out_channels == 4
    assert m["params"] == count_params(build_model(ModelSpec("tiny", (1, 8, 8), 10, {"width": 4})))
    assert m["params"] < m["teacher"]["params"]


def test_adversary_eps_steps_and_trades_beta_reach_the_training_adversary(trained_tiny, digits):
    """eps: the examples stay inside the eps-ball and reach its edge; steps: PGD queries the
    model once per step (plus the loss); trades_beta: the TRADES objective is
    CE + beta KL(f(x) || f(x')) computed here by hand."""
    model, _, _ = trained_tiny
    x, y = torch.from_numpy(digits.x_train[:8]), torch.from_numpy(digits.y_train[:8])
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    seen = {}

    def task_loss(logits, yy, x_used):
        seen["x"] = x_used
        return F.cross_entropy(logits, yy)

    try:
        counts = {}
        for eps, steps in ((0.05, 1), (0.05, 4), (0.2, 4)):
            cfg = CompressConfig(teacher="t", adversary="pgd", eps=eps, steps=steps)
            adv = make_adversary(cfg, digits)
            assert (adv.eps, adv.steps) == (eps, steps)
            calls.clear()
            adv.loss(model, x, y, task_loss)
            counts[(eps, steps)] = len(calls)
            dist = (seen["x"] - x).abs().max()
            assert float(dist) == pytest.approx(eps, abs=1e-6)  # on the edge, not beyond
        assert counts[(0.05, 4)] - counts[(0.05, 1)] == 3
    finally:
        hook.remove()
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    cfg = CompressConfig(teacher="t", adversary="trades", trades_beta=2.5)
    adv = make_adversary(cfg, digits)
    x_adv = (x + 0.05).clamp(0, 1)
    with torch.no_grad():
        p = torch.softmax(lin(x), 1)
        log_q = torch.log_softmax(lin(x_adv), 1)
        kl = float((p * (p.log() - log_q)).sum(1).mean())
        ce = float(F.cross_entropy(lin(x), y))
    got = adv.objective(lin, x, y, x_adv, lambda lg, yy, _x: F.cross_entropy(lg, yy))
    assert float(got.detach()) == pytest.approx(ce + 2.5 * kl, rel=1e-5)
    assert adv.describe()["beta"] == 2.5


@pytest.mark.parametrize("kd_target", ["adv", "clean"])
def test_kd_alpha_temp_and_target_make_the_task_loss(tiny_run, kd_target):
    """kd_alpha / kd_temp: the task loss is (1 - a) CE + a T^2 KL(teacher || student) at
    temperature T, by hand; kd_target: the teacher answers on the adversarial example (adv)
    or on the clean image (clean), whatever the student saw."""
    cfg = CompressConfig(
        teacher=str(tiny_run),
        adversary="fgsm",
        eps=0.1,
        kd_alpha=0.3,
        kd_temp=2.0,
        kd_target=kd_target,
    )
    teacher, spec, _, data = load_teacher(cfg)
    _, student = build_student(cfg, teacher, spec, data)
    with torch.no_grad():  # another student than the teacher: a KL term that is not 0
        for p in student.parameters():
            p.mul_(0.5)
    ctx = make_context(cfg, student, teacher, make_adversary(cfg, data), data, "cpu")
    x, y = torch.from_numpy(data.x_train[:16]), torch.from_numpy(data.y_train[:16])
    student.eval()
    with torch.no_grad():
        s, t = student(x), teacher.eval()(x)
    a, temp = 0.3, 2.0
    kl = (
        (
            torch.softmax(t / temp, 1)
            * (torch.log_softmax(t / temp, 1) - torch.log_softmax(s / temp, 1))
        )
        .sum(1)
        .mean()
    )
    want = (1 - a) * F.cross_entropy(s, y) + a * temp * temp * kl
    assert float(ctx.task_loss(s, y, x)) == pytest.approx(float(want), rel=1e-5)
    seen = []
    hook = teacher.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    try:
        ctx.adversary.loss(student.train(), x, y, ctx.task_loss)
    finally:
        hook.remove()
    assert torch.equal(seen[-1], x) is (kd_target == "clean")


def test_batch_size_and_seed_make_the_batches(tiny_run, small):
    """batch_size: batches of that many images, ceil(n / batch) optimizer steps per epoch;
    seed: the shuffle is the seed's (same seed, same order; another seed, another)."""
    orders = {}
    for bs, seed in ((64, 0), (50, 0), (64, 1)):
        cfg = _fast(tiny_run, small, batch_size=bs, seed=seed)
        teacher, spec, _, data = load_teacher(cfg)
        _, student = build_student(cfg, teacher, spec, data)
        ctx = make_context(cfg, student, teacher, make_adversary(cfg, data), data, "cpu")
        batches = list(ctx.batches(0))
        assert [len(b[1]) for b in batches[:-1]] == [bs] * (len(batches) - 1)
        assert len(batches) == ctx.steps_per_epoch == math.ceil(N_TRAIN / bs)
        orders[(bs, seed)] = torch.cat([b[1] for b in batches])
        assert torch.equal(orders[(bs, seed)], torch.cat([b[1] for b in ctx.batches(0)]))
    assert not torch.equal(orders[(64, 0)], orders[(64, 1)])


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.05), ("adam", 0.01)])
def test_lr_and_optimizer_make_the_fine_tune_step_by_hand(tiny_run, small, tmp_path, optimizer, lr):
    """optimizer / lr (and epochs: magnitude fine-tunes for epochs + finetune_epochs): at
    sparsity 0, one epoch of one full batch is one step, here by formula: SGD's w - lr g, or
    Adam's first step w - lr g / (|g| + 1e-8)."""
    cfg = _fast(
        tiny_run,
        small,
        method="magnitude",
        sparsity=0.0,
        batch_size=N_TRAIN,
        optimizer=optimizer,
        lr=lr,
    )
    m = compress_run(cfg, tmp_path / "s", eval_attacks=())
    assert [h["phase"] for h in m["history"]] == ["finetune"]
    teacher = load_model(tiny_run)[0].train()
    data = load_teacher(cfg)[3]
    F.cross_entropy(
        teacher(torch.from_numpy(data.x_train)), torch.from_numpy(data.y_train)
    ).backward()
    got = _params(load_model(tmp_path / "s")[0])
    for k, p in teacher.named_parameters():
        g = p.grad
        step = g if optimizer == "sgd" else g / (g.abs() + 1e-8)
        torch.testing.assert_close(got[k], p.detach() - lr * step, rtol=1e-4, atol=1e-6)
    saved = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())
    assert (saved["optimizer"], saved["lr"]) == (optimizer, lr)


def test_epochs_and_finetune_epochs_are_the_two_phases(tiny_run, small, tmp_path):
    """epochs: pruning-phase epochs; finetune_epochs: masked fine-tune epochs after it."""
    for epochs, fine in ((2, 1), (1, 2)):
        cfg = _fast(tiny_run, small, method="prox", epochs=epochs, finetune_epochs=fine)
        m = compress_run(cfg, tmp_path / f"e{epochs}", eval_attacks=())
        assert [h["phase"] for h in m["history"]] == ["prox"] * epochs + ["finetune"] * fine
        assert [h["epoch"] for h in m["history"]] == [*range(1, epochs + 1), *range(1, fine + 1)]


def test_layer_sparsity_removes_that_fraction_of_the_layers_channels(tiny_run, small, tmp_path):
    """layer_sparsity {"3": 0.25}: the tiny CNN's second conv (its only prunable group: the
    first conv and the last linear are not pruned) keeps 12 of its 16 channels, where the
    overall sparsity 0.5 alone keeps 8."""
    kw = dict(method="magnitude", structured=True, scope="layer")
    compress_run(_fast(tiny_run, small, **kw), tmp_path / "even", eval_attacks=())
    cfg = _fast(tiny_run, small, **kw, layer_sparsity={"3": 0.25})
    compress_run(cfg, tmp_path / "per", eval_attacks=())
    assert load_model(tmp_path / "even")[0][3].out_channels == 8
    assert load_model(tmp_path / "per")[0][3].out_channels == 12


@pytest.mark.parametrize("penalty", ["l1", "reweighted", "l0"])
def test_penalty_is_the_prox_step_applied(penalty):
    """penalty: prox's first step (lam0 0.1 at lr 0.5: step 0.05, a ramp of 1,000 steps whose
    first projection zeroes nothing) soft-thresholds by 0.05 (l1), by the reweighted steps
    (reweighted), or leaves the weights to the L0 projection alone (l0: unchanged)."""
    from robustedge.compress.method_prox import ProxStep
    from robustedge.compress.prox import reweighted_steps, weighted_soft_threshold

    w0 = torch.tensor([0.5, -0.02, 0.3, -0.8, 0.04, -0.1])
    w = nn.Parameter(w0.clone())
    opt = torch.optim.SGD([w], lr=0.5)
    cfg = CompressConfig.from_keys(
        teacher="t", method="prox", sparsity=0.5, penalty=penalty, lam0=0.1, lazy_prox=False
    )
    ProxStep(cfg, {"w": w}, opt, 0, 1000)(None)
    want = {
        "l1": torch.tensor([0.45, 0.0, 0.25, -0.75, 0.0, -0.05]),
        "reweighted": weighted_soft_threshold(w0, reweighted_steps(w0, 0.05)),
        "l0": w0,
    }[penalty]
    torch.testing.assert_close(w.detach(), want)
    assert penalty == "l0" or not torch.equal(w.detach(), w0)


def test_admm_rho_is_the_penalty_weight_that_grows_from_it(tiny_run, small, tmp_path):
    """--admm-rho: ADMM starts at that rho and grows it by 1.3 at the end of each epoch (one
    epoch: rho x 1.3, recorded per epoch and as the final rho); another rho trains other
    weights."""
    weights = {}
    for rho in (0.01, 2.0):
        cfg = _fast(tiny_run, small, method="admm", admm_rho=rho)
        m = compress_run(cfg, tmp_path / f"r{rho}", eval_attacks=())
        assert m["history"][0]["rho"] == pytest.approx(rho * 1.3)
        assert m["notes"]["final_rho"] == pytest.approx(rho * 1.3)
        weights[rho] = _params(load_model(tmp_path / f"r{rho}")[0])
    assert any(not torch.equal(weights[0.01][k], weights[2.0][k]) for k in weights[2.0])


def test_gmp_power_shapes_the_sparsity_schedule_given_flat_or_as_options(tiny_run, small, tmp_path):
    """--gmp-power / options: GMP's mask updates follow s_f (1 - (1 - t / end)^p) (initial
    sparsity 0, end = 3 steps of the one-epoch phase), for p given as a flat key or inside a
    GmpOptions object (the config's ``options``)."""
    from robustedge.compress.method_gmp import GmpOptions

    flat = _fast(tiny_run, small, method="gmp", sparsity=0.6, gmp_power=1.0, gmp_frequency=1)
    typed = CompressConfig.from_keys(
        **{**_fast(tiny_run, small, sparsity=0.6).to_dict(), "method": "gmp"},
        options=GmpOptions(gmp_power=2.0, gmp_frequency=1),
    )
    assert typed.options.gmp_power == 2.0
    for p, cfg in ((1.0, flat), (2.0, typed)):
        m = compress_run(cfg, tmp_path / f"p{p}", eval_attacks=())
        want = [[t, 0.6 * (1 - (1 - t / 3) ** p)] for t in range(4)]
        got = m["notes"]["gmp_updates"]
        assert [t for t, _ in got] == [0, 1, 2, 3]
        assert [s for _, s in got] == pytest.approx([s for _, s in want])


def test_score_lr_moves_hydras_scores_and_so_its_masks(tiny_run, small, tmp_path):
    """--score-lr: with a negligible score step HYDRA's masks are those of its initial scores
    (sqrt(6 / fan_in) W / max|W|, top half); a large one learns other masks."""
    from robustedge.compress.method_hydra import ScoreSet

    params = prunable_params(load_model(tiny_run)[0], False, False)
    start = ScoreSet(params, 0.5, "global").masks()
    masks = {}
    for lr in (1e-12, 0.5):
        cfg = _fast(tiny_run, small, method="hydra", score_lr=lr)
        compress_run(cfg, tmp_path / f"l{lr}", eval_attacks=())
        masks[lr] = read_masks(tmp_path / f"l{lr}")
    assert masks[1e-12].keys() == start.keys()
    assert all(torch.equal(masks[1e-12][k], start[k]) for k in start)
    assert any(not torch.equal(masks[0.5][k], start[k]) for k in start)


def test_harp_rate_lr_and_rate_gamma_drive_the_rate_training(tiny_run, small, tmp_path):
    """--rate-lr: with a negligible rate step every layer keeps its start rate (the target's
    kept 0.5), a large one moves them; --rate-gamma: the rate term's weight in the first
    epoch is gamma (recorded per epoch, HARP's (t + 1) gamma)."""
    rates = {}
    for rate_lr, gamma in ((1e-9, 0.02), (0.5, 0.3)):
        cfg = _fast(tiny_run, small, method="harp", rate_lr=rate_lr, rate_gamma=gamma)
        m = compress_run(cfg, tmp_path / f"r{rate_lr}", eval_attacks=())
        harp = m["notes"]["harp"]
        assert harp["epochs"][0]["gamma"] == pytest.approx(gamma)
        assert m["history"][0]["harp_gamma"] == pytest.approx(gamma)
        rates[rate_lr] = harp["learned_rates"]
    assert rates[1e-9] == pytest.approx([0.5] * len(rates[1e-9]), abs=1e-5)
    assert max(abs(r - 0.5) for r in rates[0.5]) > 1e-3


def test_harp_rate_alpha_is_every_layers_floor():
    """--rate-alpha: a layer's kept fraction never falls below rate_alpha x the target's
    (0.4 x 0.5 = 0.2 here), however low its rate parameter goes."""
    from robustedge.compress.method_harp import HarpState

    cfg = CompressConfig.from_keys(teacher="t", method="harp", sparsity=0.5, rate_alpha=0.4)
    state = HarpState([torch.randn(4, 3), torch.randn(6)], 0.5, cfg.options)
    assert state.k_min == pytest.approx(0.2)
    with torch.no_grad():
        state.r.fill_(-50.0)
    torch.testing.assert_close(state.rates(), torch.full((2,), 0.2))
    other = CompressConfig.from_keys(teacher="t", method="harp", sparsity=0.5, rate_alpha=0.1)
    low = HarpState([torch.randn(4, 3)], 0.5, other.options)
    with torch.no_grad():
        low.r.fill_(-50.0)
    assert float(low.rates().detach()[0]) == pytest.approx(0.05)


def _board(seen: list):
    """A board whose p50 is 1e-5 ms per MAC, recording where each latency was measured."""
    from robustedge.models import count_macs

    class Board:
        def latency(self, target, spec, data_name, data_dir):
            seen.append(target)
            return lambda model: count_macs(model, tuple(spec.input_shape))["dense"] * 1e-5

    return Board()


@pytest.mark.parametrize("how, target", [("cli", "local"), ("recipe", "ssh://pi@board")])
def test_budget_target_is_the_board_a_latency_budget_is_measured_on(
    tiny_run, small, tmp_path, how, target
):
    """--budget-target (compress: a budget string and its target) and a recipe budget's
    ``target:`` (BudgetSpec.target, the Budget it makes): a latency budget is searched and
    re-measured on that board, and recorded with the budget."""
    from robustedge.recipe.schema import BudgetSpec
    from robustedge.recipe.students import compress_student

    seen: list = []
    cfg = _fast(tiny_run, small, method="prox")
    if how == "cli":  # the options as `compress` parses them, handed on as the command does
        from robustedge.commands.compress import build_compress_command

        argv = ["--teacher", str(tiny_run), "--out", str(tmp_path / "s")]
        argv += ["--budget", "latency_ms=0.2", "--budget-target", target]
        opts = build_compress_command().make_context("compress", argv).params
        assert opts["budget_target"] == target
        m = compress_student(
            cfg, tmp_path / "s", opts["budget"], opts["budget_target"], measures=_board(seen)
        )
    else:
        spec = BudgetSpec(quantity="latency_ms", limit=0.2, target=target)
        assert spec.to_budget().target == target and spec.label.startswith("latency0.2ms-")
        m = compress_student(cfg, tmp_path / "s", spec.to_budget(), measures=_board(seen))
    assert seen and set(seen) == {target}
    assert m["budget"]["target"] == target and m["budget"]["met"]
