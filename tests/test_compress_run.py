"""`robustedge compress` end to end on a tiny model: every method, run folders, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_cli
from robustedge.compress import CompressConfig, compress_run, read_masks
from robustedge.io import read_json
from robustedge.models import count_params, load_model
from robustedge.runs import load_run
from robustedge.training.config import TrainConfig
from robustedge.training.run import train_run

FAST = dict(adversary="fgsm", eps=0.1, epochs=1, finetune_epochs=1, batch_size=128)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    train_run(TrainConfig(model="tiny", adversary="none", epochs=3, lr=1e-2), out)
    return out


def _compress(teacher: Path, out: Path, **kw) -> dict:
    cfg = CompressConfig.from_keys(teacher=str(teacher), **{**FAST, **kw})
    return compress_run(cfg, out, eval_attacks=("fgsm",))


@pytest.mark.parametrize("method", ["prox", "magnitude", "admm", "hydra"])
def test_each_method_meets_sparsity_exactly(teacher, tmp_path, method):
    m = _compress(teacher, tmp_path / method, method=method, sparsity=0.8)
    masks = read_masks(tmp_path / method)
    total = sum(v.numel() for v in masks.values())
    assert sum(int((~v).sum()) for v in masks.values()) == round(0.8 * total)
    model, _ = load_model(tmp_path / method)
    state = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(state[name][~mask] == 0)  # pruned weights stayed exactly zero
    assert m["sparsity"]["global"] >= 0.8 and m["sparsity"]["prunable"] == total
    if method == "prox":  # the lam schedule itself reaches the target before the projection
        assert m["notes"]["prox_sparsity"] == pytest.approx(0.8, abs=0.01)
    from robustedge.attacks import predict
    from robustedge.data import load_dataset

    test = load_dataset("digits")  # the saved student scores the recorded clean accuracy
    pred = predict(model, torch.as_tensor(test.x_test)).numpy()
    assert m["clean_acc"] == pytest.approx(float((pred == test.y_test).mean()), abs=1e-6)
    assert m["robust"][0]["attack"] == "fgsm"
    meta = read_json(tmp_path / method / "model.json")
    assert meta["structure"] == "masked" and meta["masks"] == "masks.safetensors"
    cfg = load_run(tmp_path / method)[2]
    assert cfg["teacher"] == str(teacher) and cfg["data"] == "digits"


def test_memory_ledger_admm_2x_lazy_prox_1x_greedy_prox_0(teacher, tmp_path):
    """ADMM keeps Z and U (2x the prunable weights), HYDRA its scores and the default lazy
    prox its dense iterate (1x each); the greedy prox of paper 1 keeps nothing."""
    prox = _compress(teacher, tmp_path / "p", method="prox", sparsity=0.5)["memory"]["phases"]
    greedy = _compress(teacher, tmp_path / "g", method="prox", sparsity=0.5, lazy_prox=False)
    greedy = greedy["memory"]["phases"]
    admm = _compress(teacher, tmp_path / "a", method="admm", sparsity=0.5)["memory"]["phases"]
    hydra = _compress(teacher, tmp_path / "h", method="hydra", sparsity=0.5)["memory"]["phases"]
    prunable = sum(
        p.numel() * 4
        for n, p in load_model(teacher)[0].named_parameters()
        if n in read_masks(tmp_path / "p")
    )
    assert greedy["prox"]["method_state"] == 0
    assert prox["prox"]["method_state"] == prunable
    assert admm["admm"]["method_state"] == 2 * prunable
    assert hydra["hydra-scores"]["method_state"] == prunable


def test_structured_shrinks_and_reloads(teacher, tmp_path):
    out = tmp_path / "s"
    m = _compress(teacher, out, method="prox", sparsity=0.5, structured=True)
    assert read_json(out / "model.json")["structure"] == "shrunk"
    model, _ = load_model(out)
    assert count_params(model) == m["params"] < m["teacher"]["params"]
    assert m["macs"]["dense"] < m["teacher"]["macs"]
    assert m["notes"]["channel_sparsity"] == pytest.approx(0.5, abs=0.07)


def test_cli_compress_then_eval(teacher, tmp_path):
    out = tmp_path / "cli"
    r = run_cli(
        "compress",
        "--teacher",
        str(teacher),
        "--sparsity",
        "0.9",
        "--epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--adversary",
        "fgsm",
        "--attack",
        "fgsm",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert "sparsity (prunable weights)" in r.stdout
    m = read_json(out / "metrics.json")
    sp = m["sparsity"]
    assert sp["zeros"] == round(0.9 * sp["prunable"])  # exactly on target
    # --epochs 1 of the pruning phase, then --finetune-epochs 1; --attack fgsm alone ran;
    # --teacher is the run recorded; --out holds the whole run folder
    assert [h["phase"] for h in m["history"]] == ["prox", "finetune"]
    assert [r["attack"] for r in m["robust"]] == ["fgsm"] and m["teacher"]["run"] == str(teacher)
    assert m["adversary"] == "fgsm" and (out / "model.safetensors").is_file()
    r = run_cli("eval", str(out), "--attack", "fgsm", "--json")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "args,words",
    [
        (["--sparsity", "1.0"], "sparsity"),
        (["--sparsity", "-0.5"], "sparsity"),
        (["--kd-alpha", "2"], "alpha"),
        (["--method", "obd"], "method"),
        (["--data", "synthetic"], "teacher"),
        (["--adversary-opt", "novalue"], "key=value"),
    ],
)
def test_cli_bad_input_one_line(teacher, tmp_path, args, words):
    out = tmp_path / "bad"
    r = run_cli("compress", "--teacher", str(teacher), "--out", str(out), "--epochs", "1", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]
    assert not out.exists()


def test_cli_missing_teacher(tmp_path):
    r = run_cli("compress", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "teacher run not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_nonfinite_loss_stops_and_keeps_checkpoint(teacher, tmp_path):
    import shutil

    bad = tmp_path / "nan_teacher"
    shutil.copytree(teacher, bad)
    state = load_file(str(bad / "model.safetensors"))
    state = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in state.items()
    }
    save_file(state, str(bad / "model.safetensors"))
    out = tmp_path / "student"
    r = run_cli(
        "compress",
        "--teacher",
        str(bad),
        "--model",
        "tiny",
        "--model",
        "tiny",
        "--epochs",
        "1",
        "--adversary",
        "none",
        "--out",
        str(out),
    )
    assert r.returncode == 2 and "non-finite loss" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (out / "checkpoint" / "last.pt").is_file() and not (out / "model.safetensors").exists()


def test_adversary_options_pass_through():
    from robustedge.compress.pipeline import make_adversary
    from robustedge.data import load_dataset
    from robustedge.errors import RobustEdgeError

    digits = load_dataset("digits")
    cfg = CompressConfig(teacher="t", adversary="pgd", adversary_opts={"alpha": 0.05})
    assert make_adversary(cfg, digits).alpha == 0.05
    synthetic = load_dataset("synthetic")
    cfg = CompressConfig(
        teacher="t", adversary="onmanifold", adversary_opts={"manifold": "synthetic", "ratio": 0.25}
    )
    adv = make_adversary(cfg, synthetic)
    assert adv.name == "onmanifold" and adv.ratio == 0.25
    with pytest.raises(RobustEdgeError):
        make_adversary(CompressConfig(teacher="t", adversary="onmanifold"), digits)


@pytest.mark.parametrize("kw", [{"penalty": "l0"}, {"penalty": "l1", "lam_schedule": "feedback"}])
def test_prox_variants_meet_sparsity(teacher, tmp_path, kw):
    m = _compress(teacher, tmp_path / "v", method="prox", sparsity=0.7, **kw)
    masks = read_masks(tmp_path / "v")
    total = sum(v.numel() for v in masks.values())
    assert sum(int((~v).sum()) for v in masks.values()) == round(0.7 * total)
    assert m["sparsity"]["zeros"] >= round(0.7 * total)


@pytest.mark.parametrize(
    "kw", [{"lam_schedule": "track"}, {"lam_schedule": "ball", "penalty": "l1"}]
)
def test_old_and_l1_schedules_meet_sparsity(teacher, tmp_path, kw):
    m = _compress(teacher, tmp_path / "v", method="prox", sparsity=0.7, **kw)
    assert m["sparsity"]["global"] == pytest.approx(0.7, abs=1e-3)
    assert m["notes"]["prox_sparsity"] == pytest.approx(0.7, abs=0.01)


@pytest.fixture(scope="module")
def lenet_teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lenet") / "run"
    train_run(TrainConfig(model="lenet5", adversary="none", epochs=10, lr=2e-3), out)
    return out


def test_default_prox_keeps_accuracy_at_95_percent(lenet_teacher, tmp_path):
    """Regression: the old default (lam tracking the ramp's k-th magnitude, now
    ``lam_schedule='track'``) shrank every surviving weight by that threshold each step and
    fell to chance (0.098) here; the default ``ball`` schedule keeps ~0.42."""
    assert CompressConfig(teacher="t").options.lam_schedule == "ball"
    m = _compress(lenet_teacher, tmp_path / "p95", sparsity=0.95, epochs=5, finetune_epochs=3)
    assert m["method"] == "prox" and m["sparsity"]["global"] == pytest.approx(0.95, abs=1e-3)
    assert m["notes"]["prox_sparsity"] == pytest.approx(0.95, abs=1e-3)
    assert m["clean_acc"] > 0.3  # chance is 0.1
