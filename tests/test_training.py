"""Training loop, adversaries, run folders, resume and the train/eval CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from robustedge.errors import RobustEdgeError, TrainingError
from robustedge.models import ModelSpec, build_model, load_model
from robustedge.training import ADVERSARIES, build_adversary, epoch_batches, fit
from robustedge.training.config import TrainConfig
from robustedge.training.run import eval_run, train_run


def test_run_folder_contents(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"model.safetensors", "model.json", "config.yaml", "metrics.json", "checkpoint"} <= names
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert 0.5 < metrics["clean_acc"] <= 1.0  # 3 epochs of a tiny CNN: well above chance
    for r in metrics["robust"]:
        assert {"attack", "eps", "steps", "restarts", "acc"} <= set(r)
        assert r["acc"] <= metrics["clean_acc"]
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert TrainConfig.from_dict(cfg).model == "tiny"
    model, spec = load_model(tiny_run)
    assert spec.input_shape == (1, 8, 8)


# on-manifold adversaries need a VAE run: tests/test_manifold_training.py covers them
OFF_MANIFOLD = [n for n in ADVERSARIES.names() if n not in ("onmanifold", "mixed")]


@pytest.mark.parametrize("name", OFF_MANIFOLD)
def test_each_adversary_trains_one_step(name, digits):
    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", digits.input_shape, 10))
    x = torch.as_tensor(digits.x_train[:64])
    y = torch.as_tensor(digits.y_train[:64])
    adv = build_adversary(name, eps=0.1, steps=3)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    hist = fit(model, epoch_batches(x, y, 32, 0), adv, opt, 2)
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    assert model.training  # the loop leaves the model in train mode after attacks


def test_non_finite_loss_stops_with_clear_error(digits):
    model = build_model(ModelSpec("tiny", digits.input_shape, 10))
    x = torch.as_tensor(digits.x_train[:32])
    y = torch.as_tensor(digits.y_train[:32])

    def nan_loss(logits, y, x_used):
        return logits.sum() * float("nan")

    opt = torch.optim.SGD(model.parameters(), 0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TrainingError, match="non-finite loss"):
        fit(model, epoch_batches(x, y, 32, 0), build_adversary("none"), opt, 1, task_loss=nan_loss)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_resume_matches_uninterrupted(tmp_path):
    cfg = TrainConfig(model="tiny", adversary="none", epochs=2, lr=1e-2, seed=3)
    full = train_run(cfg, tmp_path / "full")
    # Interrupted after epoch 1: run a 1-epoch config, then resume with the 2-epoch one.
    partial = tmp_path / "part"
    train_run(cfg, partial, resume=True)  # fresh run via --resume on an empty folder works
    state = torch.load(partial / "checkpoint" / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    resumed = train_run(cfg, partial, resume=True)  # nothing left to train: same result
    assert resumed["clean_acc"] == pytest.approx(full["clean_acc"])


def test_resume_continues_from_checkpoint(tmp_path):
    import robustedge.training.run as run_mod

    cfg = TrainConfig(model="tiny", adversary="none", epochs=3, lr=1e-2, seed=1)
    ref = train_run(cfg, tmp_path / "ref")
    out = tmp_path / "crash"
    calls = {"n": 0}
    real_fit = run_mod.fit

    def crashing_fit(*a, hooks=None, **kw):
        def hook(epoch, rec):
            hooks.on_epoch_end(epoch, rec)
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt

        return real_fit(*a, hooks=dataclasses.replace(hooks, on_epoch_end=hook), **kw)

    run_mod.fit = crashing_fit
    try:
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg, out)
    finally:
        run_mod.fit = real_fit
    assert not (out / "metrics.json").exists()
    with pytest.raises(RobustEdgeError, match="not empty"):
        train_run(cfg, out)
    resumed = train_run(cfg, out, resume=True)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["clean_acc"] == pytest.approx(ref["clean_acc"], abs=1e-6)


def test_resume_refuses_other_config(tmp_path, tiny_run):
    cfg = TrainConfig(model="tiny", adversary="none", epochs=5, lr=1e-2, seed=0)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    with pytest.raises(RobustEdgeError, match="different config"):
        train_run(cfg, copy, resume=True)


def test_eval_run_writes_json(tiny_run):
    from robustedge.attacks import AttackSpec

    result = eval_run(tiny_run, [AttackSpec.default("fgsm", 0.1), AttackSpec.default("pgd", 0.1)])
    saved = json.loads((tiny_run / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    fgsm, pgd = saved["robust"]
    assert pgd["acc"] <= fgsm["acc"] + 0.02
    assert pgd["steps"] == 20 and pgd["restarts"] == 5


def test_eval_cli_records_the_settings_that_ran(tiny_run, tmp_path):
    """`robustedge eval --attack apgd-ce` records APGD's 100 steps; --steps sets the steps and
    Square's queries; a restart count is recorded only where the attack restarts."""
    import shutil

    from click.testing import CliRunner

    from robustedge.cli import cli

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)

    def rows(*args: str) -> list:
        r = CliRunner().invoke(cli, ["eval", str(run), "--json", *args])
        assert r.exit_code == 0, r.output
        saved = json.loads((run / "eval.json").read_text())
        return [(x["attack"], x["eps"], x["steps"], x["restarts"]) for x in saved["robust"]]

    assert rows("--attack", "apgd-ce") == [("apgd-ce", 0.1, 100, 1)]
    got = rows("--attack", "fgsm", "--attack", "square", "--steps", "2", "--restarts", "2")
    assert got == [("fgsm", 0.1, 0, 1), ("square", 0.1, 2, 2)]
    got = rows(
        "--attack", "trades", "--attack", "square", "--pgd-steps", "2", "--square-queries", "3"
    )
    assert got == [("trades", 0.1, 2, 1), ("square", 0.1, 3, 1)]
    r = CliRunner().invoke(cli, ["eval", str(run), "--steps", "2", "--pgd-steps", "3"])
    assert r.exit_code == 2 and "give --steps or --pgd-steps / --square-queries" in r.output


def test_train_metrics_use_the_default_eval_plan(tiny_run):
    """A run's metrics.json is the default EvalPlan at the run's eps (FGSM and PGD-20x5)."""
    from robustedge.training.evaluate import EvalPlan

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    want = [s.record() for s in EvalPlan(eps=(0.1,)).specs()]
    assert [{k: r[k] for k in want[0]} for r in metrics["robust"]] == want
    assert [(r["attack"], r["steps"], r["restarts"]) for r in metrics["robust"]] == [
        ("fgsm", 0, 1),
        ("pgd", 20, 5),
    ]


def test_cli_train_and_eval(tmp_path, cli):
    out = tmp_path / "run"
    r = cli(
        "train",
        "--model",
        "tiny",
        "--adversary",
        "fgsm",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert "clean" in r.stdout and "pgd eps=0.1 steps=20 restarts=5" in r.stdout
    # the options reached the run: its model, adversary and epochs; no progress bar
    assert load_model(out)[1].name == "tiny"
    m = json.loads((out / "metrics.json").read_text())
    assert m["adversary"] == "fgsm" and [h["epoch"] for h in m["history"]] == [1]
    assert "epoch 1/1" not in r.stderr  # test_effects_train.py: the bar of progress=True
    r = cli(
        "eval",
        str(out),
        "--attack",
        "pgd",
        "--eps",
        "0.05",
        "--eps",
        "0.1",
        "--steps",
        "5",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [x["eps"] for x in data["robust"]] == [0.05, 0.1]
    assert data["robust"][0]["acc"] >= data["robust"][1]["acc"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "resnet999", "--out", "{tmp}/a"], "unknown model 'resnet999'"),
        (["train", "--data", "imagenet", "--out", "{tmp}/a"], "unknown data set 'imagenet'"),
        (["train", "--eps", "-1", "--out", "{tmp}/a"], "eps must lie in"),
        (["train", "--epochs", "0", "--out", "{tmp}/a"], "epochs must be > 0"),
        (["eval", "{tmp}/missing"], "run folder not found"),
        (["eval", "{tmp}", "--attack", "cw"], "unknown attack 'cw' (known: apgd-ce, apgd-dlr,"),
        (["eval", "{tmp}", "--eps", "0"], "eps must lie in (0, 1], got 0.0"),
        (["eval", "{tmp}", "--restarts", "0"], "restarts must be >= 1, got 0"),
        (["train", "--device", "cuda", "--epochs", "1", "--out", "{tmp}/a"], "no CUDA GPU"),
    ],
)
def test_cli_bad_input_one_line(tmp_path, cli, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present, so --device cuda is valid here")
    r = cli(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()


def test_corrupt_weights_clear_error(tmp_path, tiny_run, cli):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    r = cli("eval", str(bad))
    assert r.returncode == 2 and "corrupt weights file" in r.stderr
    assert "Traceback" not in r.stderr
