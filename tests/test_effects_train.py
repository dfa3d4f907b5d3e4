"""Effect tests for `robustedge train` options and TrainConfig keys (tests/option_effects.py).

Each run trains the tiny CNN on a small cut of digits (192 training, 32 test images, an npz
file) so that a whole ``train_run``, its final evaluation included, takes a fraction of a
second; what a setting changes is checked against a value computed here by hand (the first
optimizer steps) or against the same run without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import SMALL_DIGITS
from robustedge.models import ModelSpec, build_model, count_params, load_model
from robustedge.training import epoch_batches
from robustedge.training.config import TrainConfig
from robustedge.training.run import seed_everything, train_run

N_TRAIN, N_TEST = SMALL_DIGITS


@pytest.fixture(scope="module")
def small(small_digits) -> str:
    return small_digits


def _xy(path: str):
    z = np.load(path)
    return torch.from_numpy(z["x_train"]), torch.from_numpy(z["y_train"])


def _params(run) -> dict:
    w = load_file(str(run / "model.safetensors"))
    return {k: v for k, v in w.items() if "running" not in k and "num_batches" not in k}


def _by_hand(path: str, optimizer: str, lr: float, batch_size: int, seed: int) -> dict:
    """One epoch of natural training, written out: the init of ``seed``, the batches of
    ``batch_size`` in the epoch's shuffle, and SGD (momentum 0.9) or Adam steps by formula."""
    x, y = _xy(path)
    seed_everything(seed)
    model = build_model(ModelSpec("tiny", (1, 8, 8), 10)).train()
    params = dict(model.named_parameters())
    state = {n: {"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for n, p in params.items()}
    for t, (xb, yb) in enumerate(epoch_batches(x, y, batch_size, seed)(0), start=1):
        model.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        with torch.no_grad():
            for n, p in params.items():
                g, s = p.grad, state[n]
                if optimizer == "sgd":  # torch's SGD: buf = 0.9 buf + g (buf = g at t = 1)
                    s["m"] = g.clone() if t == 1 else 0.9 * s["m"] + g
                    p -= lr * s["m"]
                else:  # Adam, betas (0.9, 0.999), eps 1e-8, bias-corrected
                    s["m"] = 0.9 * s["m"] + 0.1 * g
                    s["v"] = 0.999 * s["v"] + 0.001 * g * g
                    m_hat, v_hat = s["m"] / (1 - 0.9**t), s["v"] / (1 - 0.999**t)
                    p -= lr * m_hat / (v_hat.sqrt() + 1e-8)
    return {n: p.detach() for n, p in params.items()}


@pytest.mark.parametrize(
    "optimizer, lr, batch_size, seed",
    [("sgd", 0.05, N_TRAIN, 3), ("adam", 0.01, N_TRAIN, 3), ("sgd", 0.05, 96, 4)],
)
def test_one_epoch_is_the_hand_written_steps_of_its_settings(
    small, tmp_path, optimizer, lr, batch_size, seed
):
    """data / data_dir (the npz file), model, optimizer, lr, batch_size and seed: the trained
    weights are the hand-written steps of exactly these settings (one full batch, or two of
    96), and the run records them; another seed starts from other weights."""
    cfg = TrainConfig(
        data="npz",
        data_dir=small,
        model="tiny",
        adversary="none",
        epochs=1,
        optimizer=optimizer,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
    )
    m = train_run(cfg, tmp_path / "run")
    got, want = _params(tmp_path / "run"), _by_hand(small, optimizer, lr, batch_size, seed)
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6)
    other = _by_hand(small, optimizer, lr, batch_size, seed + 1)
    assert any(not torch.allclose(got[k], other[k], atol=1e-3) for k in want)
    assert m["n"] == N_TEST and m["global_batch_size"] == batch_size  # the npz's test split
    # the adversary's random stream is the seed's too: (seed, rank 0) -> seed * 1000003 + 1
    # (no adversary here: nothing drawn from it yet)
    state = torch.load(tmp_path / "run" / "checkpoint" / "last.pt", weights_only=True)
    want_gen = torch.Generator().manual_seed(seed * 1_000_003 + 1).get_state()
    assert torch.equal(state["rng"][0]["generator"], want_gen)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["optimizer"], saved["lr"], saved["seed"], saved["data"]) == (
        optimizer,
        lr,
        seed,
        "npz",
    )


def test_epochs_are_the_history_and_the_cosine_schedule_ends_at_zero(small, tmp_path):
    """epochs=3: three epochs ran, and the learning rate was annealed over exactly three (the
    checkpoint's optimizer ends at lr 0, the cosine schedule's end)."""
    cfg = TrainConfig(data="npz", data_dir=small, model="tiny", adversary="none", epochs=3)
    m = train_run(cfg, tmp_path / "run")
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]
    state = torch.load(tmp_path / "run" / "checkpoint" / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["scheduler"]["T_max"] == 3
    (group,) = state["optimizer"]["param_groups"]
    assert group["lr"] == pytest.approx(0.0, abs=1e-12)


def test_model_kwargs_build_the_architecture_named(small, tmp_path):
    """model_kwargs (--model-arg width=4): the trained model has width 4 (4 channels in its
    first conv), is saved with that spec, and has the parameters of that architecture."""
    cfg = TrainConfig(
        data="npz",
        data_dir=small,
        model="tiny",
        model_kwargs={"width": 4},
        adversary="none",
        epochs=1,
    )
    m = train_run(cfg, tmp_path / "run")
    model, spec = load_model(tmp_path / "run")
    assert spec.name == "tiny" and spec.kwargs == {"width": 4}
    assert model[0].out_channels == 4
    narrow = count_params(build_model(ModelSpec("tiny", (1, 8, 8), 10, {"width": 4})))
    wide = count_params(build_model(ModelSpec("tiny", (1, 8, 8), 10)))
    assert m["params"] == narrow < wide


def test_adversary_settings_are_the_ones_that_trained(small, tmp_path):
    """adversary / eps / steps / trades_beta: the run records what trained and evaluates at
    its eps; TRADES with beta 0 is clean training (its objective is the clean CE alone), so
    its weights are those of adversary none, and beta 2 trains other weights."""
    base = dict(data="npz", data_dir=small, model="tiny", epochs=1, batch_size=64)
    m = train_run(
        TrainConfig(**base, adversary="trades", eps=0.05, steps=2, trades_beta=2.0),
        tmp_path / "trades",
    )
    assert (m["adversary"], m["eps"], m["steps"], m["beta"]) == ("trades", 0.05, 2, 2.0)
    assert {r["eps"] for r in m["robust"]} == {0.05}
    train_run(
        TrainConfig(**base, adversary="trades", eps=0.05, steps=2, trades_beta=0.0),
        tmp_path / "beta0",
    )
    train_run(TrainConfig(**base, adversary="none", eps=0.05), tmp_path / "none")
    b0, clean, b2 = (_params(tmp_path / n) for n in ("beta0", "none", "trades"))
    for k in clean:
        torch.testing.assert_close(b0[k], clean[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(b2[k], clean[k], atol=1e-4) for k in clean)
    pgd = {}
    for name, eps, steps in (("e05s1", 0.05, 1), ("e2s1", 0.2, 1), ("e05s3", 0.05, 3)):
        out = tmp_path / name
        r = train_run(TrainConfig(**base, adversary="pgd", eps=eps, steps=steps), out)
        assert (r["adversary"], r["eps"], r["steps"]) == ("pgd", eps, steps)
        pgd[name] = _params(out)
    for other in ("e2s1", "e05s3"):  # another eps, other steps: other weights
        assert any(not torch.allclose(pgd[other][k], pgd["e05s1"][k]) for k in clean)


def test_suite_is_evaluated_on_the_trained_model(small, tmp_path):
    """suite: the final model is also evaluated under the suite's worst case per image."""
    cfg = TrainConfig(data="npz", data_dir=small, model="tiny", adversary="none", epochs=1)
    m = train_run(cfg, tmp_path / "run", suite="worst-case-quick")
    (s,) = m["suites"]
    assert s["suite"] == "worst-case-quick" and s["eps"] == cfg.eps and s["n"] == N_TEST
    assert s["worst_case_acc"] <= min(r["acc"] for r in s["per_attack"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["suites"] == json.loads(json.dumps(m["suites"]))
    assert "suites" not in train_run(cfg, tmp_path / "plain")


def test_progress_bar_unless_no_progress(small, tmp_path):
    """`train` draws its progress bar on stderr; --no-progress hides it. --out is the run
    folder written."""
    from robustedge.cli import cli

    args = ["train", "--data", "npz", "--data-dir", small, "--model", "tiny"]
    args += ["--adversary", "none", "--epochs", "1", "--device", "cpu"]
    runner = CliRunner()
    shown = runner.invoke(cli, [*args, "--out", str(tmp_path / "a")])
    hidden = runner.invoke(cli, [*args, "--no-progress", "--out", str(tmp_path / "b")])
    assert shown.exit_code == 0 and hidden.exit_code == 0, shown.output + hidden.output
    assert "epoch 1/1" in shown.stderr and "epoch 1/1" not in hidden.stderr
    for run in (tmp_path / "a", tmp_path / "b"):
        assert (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()


def test_recipe_data_teacher_and_compress_entries_are_what_runs(small, tiny_run, tmp_path):
    """A recipe's data (name, data_dir: the npz file), teacher.train (its TrainConfig keys)
    and compress entry (name, method options): the teacher trains 2 epochs on the npz file,
    the student is named after its entry and runs GMP with its power; teacher.load instead
    copies that run's model."""
    from robustedge.recipe import parse_recipe
    from robustedge.recipe.schema import CompressSpec, DataSpec
    from robustedge.recipe.stages import run_recipe

    text = f"""\
name: fx
data: {{name: npz, data_dir: {small}}}
teacher:
  train: {{model: tiny, epochs: 2, adversary: none, eps: 0.0, lr: 0.02}}
evaluate: {{attacks: []}}
compress:
  - {{name: g, method: gmp, sparsity: [0.6], epochs: 1, finetune_epochs: 0, adversary: none,
      batch_size: 64, gmp_power: 1.0, gmp_frequency: 1}}
"""
    recipe = parse_recipe(text)
    assert recipe.data == DataSpec(name="npz", data_dir=small)
    assert recipe.teacher.train["epochs"] == 2
    options = dict(seed=0, method="gmp", epochs=1, finetune_epochs=0, adversary="none")
    options.update(batch_size=64, gmp_power=1.0, gmp_frequency=1)  # seed: the recipe's
    assert recipe.compress == (CompressSpec(name="g", sparsity=(0.6,), options=options),)
    run_recipe(recipe, tmp_path / "out")
    teacher = tmp_path / "out" / "teacher"
    m = json.loads((teacher / "metrics.json").read_text())
    assert m["n"] == N_TEST and len(m["history"]) == 2  # the npz's 32 test images, 2 epochs
    saved = yaml.safe_load((teacher / "config.yaml").read_text())
    assert (saved["data"], saved["data_dir"], saved["lr"]) == ("npz", small, 0.02)
    student = tmp_path / "out" / "students" / "g-s0.6"
    s = json.loads((student / "metrics.json").read_text())
    assert s["method"] == "gmp" and s["n"] == N_TEST
    assert [u[1] for u in s["notes"]["gmp_updates"]] == pytest.approx(
        [0.6 * t / 3 for t in range(4)]  # power 1: a straight line to 0.6 over 3 steps
    )
    loaded = parse_recipe(f"name: fx\nteacher:\n  load: {tiny_run}\nevaluate: {{attacks: []}}\n")
    assert loaded.teacher.load == str(tiny_run) and loaded.teacher.train is None
    run_recipe(loaded, tmp_path / "copy")
    a = load_file(str(tmp_path / "copy" / "teacher" / "model.safetensors"))
    b = load_file(str(tiny_run / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("command", ["train", "compress"])
def test_node_options_reach_the_launch_layout(command, tmp_path):
    """--nnodes, --node-rank, --rdzv-endpoint and --rdzv-id of `train` and `compress` are the
    launch layout's (test_multinode.py: its torchrun options): each is checked there, before
    anything runs or is written."""
    from robustedge.cli import cli

    out = tmp_path / "out"
    base = [command, "--out", str(out)] + (
        ["--teacher", str(tmp_path)] if command == "compress" else []
    )
    cases = [
        (["--nnodes", "2"], "--nnodes 2 needs --rdzv-endpoint HOST:PORT"),
        (["--node-rank", "1"], "--node-rank is for a job over several nodes"),
        (["--rdzv-endpoint", "h:1"], "--rdzv-endpoint is for a job over several nodes"),
        (["--rdzv-id", "job7"], "--rdzv-id is for a job over several nodes"),
        (["--nnodes", "2", "--rdzv-endpoint", "h:99999"], "HOST:PORT (port 1-65535)"),
        (["--nnodes", "3", "--rdzv-endpoint", "h:1", "--node-rank", "3"], "in 0..2, got 3"),
        (
            ["--nnodes", "2", "--rdzv-endpoint", "h:1", "--node-rank", "0", "--rdzv-id", "j"],
            "leave",
        ),
    ]
    for args, message in cases:
        r = CliRunner().invoke(cli, [*base, *args])
        assert r.exit_code == 2 and message in r.output, (args, r.output)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="test_cuda.py trains there on a GPU")
def test_device_is_resolved_before_anything_is_written(small, tiny_run, tmp_path):
    """device (train and compress): the run goes where it names; cuda without a GPU is the one
    clear error, before any data is read or any file written (on a GPU, test_cuda.py trains
    and compresses with device="cuda")."""
    from robustedge.compress import CompressConfig, compress_run
    from robustedge.errors import RobustEdgeError

    cfg = TrainConfig(data="npz", data_dir=small, model="tiny", adversary="none", device="cuda")
    with pytest.raises(RobustEdgeError, match="--device cuda was asked for but no CUDA GPU"):
        train_run(cfg, tmp_path / "t")
    with pytest.raises(RobustEdgeError, match="--device cuda was asked for but no CUDA GPU"):
        compress_run(CompressConfig(teacher=str(tiny_run), device="cuda"), tmp_path / "c")
    assert not (tmp_path / "t").exists() and not (tmp_path / "c").exists()


def test_manifold_ratio_and_eta_are_what_the_onmanifold_adversary_trains_with(small, tmp_path):
    """manifold / onmanifold_ratio / eta: the on-manifold adversary replaces that fraction of
    each batch: at ratio 0 nothing (the weights of adversary none, exactly), at 0.5 half, with
    latent steps inside eta (another eta: other weights); the run records all three."""
    from robustedge.manifold.vae import CVAE, VAEManifold

    torch.manual_seed(0)  # an untrained CVAE of the npz data: a manifold all the same
    vae = "a-cvae"  # the manifold's name (train_run is given the Manifold object itself)
    manifold = VAEManifold(CVAE((1, 8, 8), 10, 4, 32), "npz", source=vae)
    base = dict(data="npz", data_dir=small, model="tiny", epochs=1, batch_size=64, steps=2)
    runs = {}
    for name, kw in (
        ("none", dict(adversary="none")),
        ("r0", dict(adversary="onmanifold", manifold=vae, onmanifold_ratio=0.0)),
        ("r5", dict(adversary="onmanifold", manifold=vae, onmanifold_ratio=0.5, eta=0.1)),
        ("r5e", dict(adversary="onmanifold", manifold=vae, onmanifold_ratio=0.5, eta=1.0)),
    ):
        m = train_run(TrainConfig(**base, **kw), tmp_path / name, manifold=manifold)
        if name != "none":
            assert (m["manifold"], m["ratio"]) == (vae, kw["onmanifold_ratio"])
            assert m["eta"] == kw.get("eta", manifold.default_eta)
        runs[name] = _params(tmp_path / name)
    for k in runs["none"]:
        assert torch.equal(runs["r0"][k], runs["none"][k])
    assert any(not torch.equal(runs["r5"][k], runs["none"][k]) for k in runs["none"])
    assert any(not torch.equal(runs["r5"][k], runs["r5e"][k]) for k in runs["none"])
