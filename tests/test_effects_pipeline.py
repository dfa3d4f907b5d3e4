"""What each host-side option changes (issue 25, part 3: every option has a test that checks
its effect): `robustedge eval`, `export`, `manifold train` options, the EvalPlan / ExportConfig
fields behind them and the recipe's top-level keys, each set to a non-default value and checked
against a value worked out by hand or against the run without it (tests/option_effects.py names
these tests)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner

from robustedge.cli import cli


def eval_copy(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def run_data(run: Path):
    """(model in eval mode, x_test, y_test) of a digits run."""
    from robustedge.data import load_dataset
    from robustedge.models import load_model

    model, _ = load_model(run)
    d = load_dataset("digits")
    return model.eval(), torch.as_tensor(d.x_test), torch.as_tensor(d.y_test)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def fgsm_by_hand(model, x, y, eps: float) -> float:
    """FGSM: one signed-gradient step of size eps on the cross-entropy, clipped to [0, 1]."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return accuracy(model, (x + eps * g.sign()).clamp(0, 1).detach(), y)


def test_eval_options_change_the_attacks_that_run(tiny_run, tmp_path):
    """Each `robustedge eval` option against the run without it: FGSM at each --eps by hand;
    more --pgd-steps / --restarts / --square-queries never weaker (here: stronger); --seed a
    different random start; --steps sets both budgets; --json prints eval.json; the EvalPlan
    fields give the same rows as the options."""
    from robustedge import api
    from robustedge.training.evaluate import EvalPlan

    run = eval_copy(tiny_run, tmp_path)

    def ev(*args: str):
        r = CliRunner().invoke(cli, ["eval", str(run), *args])
        assert r.exit_code == 0, r.output
        return r.output, json.loads((run / "eval.json").read_text())

    def rows(e):
        return [(x["attack"], x["eps"], x["steps"], x["restarts"]) for x in e["robust"]]

    def acc(e, i=0):
        return e["robust"][i]["acc"]

    out, fg = ev("--attack", "fgsm", "--eps", "0.05", "--eps", "0.2", "--json")
    assert json.loads(out) == fg  # --json: stdout is the object eval.json holds
    table, _ = ev("--attack", "fgsm")
    with pytest.raises(ValueError):
        json.loads(table)  # without it: a table
    model, x, y = run_data(run)
    assert rows(fg) == [("fgsm", 0.05, 0, 1), ("fgsm", 0.2, 0, 1)]
    for row in fg["robust"]:
        assert row["acc"] == pytest.approx(fgsm_by_hand(model, x, y, row["eps"]), abs=1e-6)
    assert "corruptions" not in fg
    _, p1 = ev("--attack", "pgd", "--pgd-steps", "1", "--restarts", "1")
    _, p5 = ev("--attack", "pgd", "--pgd-steps", "5", "--restarts", "1")
    _, r3 = ev("--attack", "pgd", "--pgd-steps", "1", "--restarts", "3")
    _, s1 = ev("--attack", "pgd", "--pgd-steps", "1", "--restarts", "1", "--seed", "1")
    assert rows(p1) == [("pgd", 0.1, 1, 1)] and rows(p5) == [("pgd", 0.1, 5, 1)]
    assert rows(r3) == [("pgd", 0.1, 1, 3)]
    assert acc(p5) < acc(p1) and acc(r3) < acc(p1)
    assert (p1["seed"], s1["seed"]) == (0, 1) and acc(s1) != acc(p1)
    _, q2 = ev("--attack", "square", "--square-queries", "2")
    _, q20 = ev("--attack", "square", "--square-queries", "20")
    assert rows(q2) == [("square", 0.1, 2, 1)] and acc(q20) < acc(q2)
    _, both = ev("--attack", "pgd", "--attack", "square", "--steps", "2")
    assert [r[:3] for r in rows(both)] == [("pgd", 0.1, 2), ("square", 0.1, 2)]
    assert acc(both, 1) == acc(q2)  # the same Square-2 run
    # the EvalPlan fields behind the options: the same rows, the same numbers
    for plan, want in [
        (EvalPlan(attacks=("fgsm",), eps=(0.05, 0.2)), fg),
        (EvalPlan(attacks=("pgd",), pgd_steps=5, restarts=1), p5),
        (EvalPlan(attacks=("square",), square_queries=20), q20),
    ]:
        api.evaluate(run, plan)
        got = json.loads((run / "eval.json").read_text())
        assert got["robust"] == want["robust"]


@pytest.fixture
def toy_suite():
    """A cheap suite registered as a plugin would: FGSM and PGD-2 at the eval's eps."""
    from robustedge.attacks import AttackSpec
    from robustedge.attacks.suite import SUITES, AttackSuite

    def factory(eps: float) -> AttackSuite:
        return AttackSuite("toy", (AttackSpec("fgsm", eps), AttackSpec("pgd", eps, steps=2)))

    SUITES.register("toy", factory)
    yield "toy"
    SUITES.unregister("toy")


def test_eval_suite_adds_the_worst_case_per_image(tiny_run, toy_suite, tmp_path):
    """`eval --suite NAME`: the suite's attacks at every --eps and their worst case per image
    (never above any one of them; its FGSM row is FGSM by hand); without it, no suite."""
    run = eval_copy(tiny_run, tmp_path)
    args = ["eval", str(run), "--attack", "fgsm", "--eps", "0.05"]
    r = CliRunner().invoke(cli, [*args, "--suite", toy_suite])
    assert r.exit_code == 0, r.output
    ev = json.loads((run / "eval.json").read_text())
    (s,) = ev["suites"]
    assert s["suite"] == "toy" and s["eps"] == 0.05 and s["n"] == ev["n"]
    accs = [a["acc"] for a in s["per_attack"]]
    assert [a["attack"] for a in s["per_attack"]] == ["fgsm", "pgd"]
    model, x, y = run_data(run)
    assert accs[0] == pytest.approx(fgsm_by_hand(model, x, y, 0.05), abs=1e-6)
    assert accs[0] == pytest.approx(ev["robust"][0]["acc"], abs=1e-6)
    assert s["worst_case_acc"] <= min(accs)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "suites" not in json.loads((run / "eval.json").read_text())


@pytest.fixture(scope="module")
def small_vae(tmp_path_factory) -> Path:
    """A digits CVAE (in-process, about a second)."""
    from robustedge.manifold.train import VAEConfig, train_vae

    out = tmp_path_factory.mktemp("effects") / "vae"
    train_vae(VAEConfig(epochs=10, device="cpu"), out)
    return out


def test_eta_manifold_and_corruptions_set_what_is_measured(tiny_run, small_vae, tmp_path):
    """--eta 0 leaves the on-manifold attack no latent budget: its images are the given
    manifold's reconstructions, scored by hand; eta 1 breaks more. ``corruptions`` adds the
    corruption table (one cell by hand)."""
    from robustedge import api
    from robustedge.attacks.corruptions import corrupt
    from robustedge.manifold import load_manifold
    from robustedge.training.evaluate import EvalPlan

    run = eval_copy(tiny_run, tmp_path)
    r = CliRunner().invoke(
        cli,
        ["eval", str(run), "--attack", "onmanifold", "--manifold", str(small_vae), "--eta", "0",
         "--steps", "2"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    (row,) = json.loads((run / "eval.json").read_text())["robust"]
    model, x, y = run_data(run)
    with torch.no_grad():
        rec = load_manifold(small_vae).reconstruct(x, y).clamp(0, 1)
    assert row["attack"] == "onmanifold" and row["eps"] == 0.0
    assert row["acc"] == pytest.approx(accuracy(model, rec, y), abs=1e-6)
    plan = EvalPlan(attacks=("onmanifold",), manifold=str(small_vae), eta=1.0, pgd_steps=5)
    (far,) = api.evaluate(run, plan).to_json()["robust"]
    assert far["eps"] == 1.0 and far["acc"] < row["acc"]
    ev = api.evaluate(run, EvalPlan(attacks=("fgsm",), corruptions=True)).to_json()
    noisy = torch.as_tensor(corrupt(x.numpy(), "gaussian_noise", 3, 0))
    assert ev["corruptions"]["gaussian_noise"]["3"] == pytest.approx(
        accuracy(model, noisy, y), abs=1e-6
    )


# ------------------------------------------------------------------------ manifold train


def test_manifold_train_options_shape_and_record_the_vae(tmp_path):
    """`robustedge manifold train` with every option given: the VAE has the latent size and
    width asked for, trained for the epochs asked for, into --out, with its config recorded;
    another --data with a --data-dir is looked for there; --device cuda without a GPU is
    refused (the numeric settings' effects, by hand: the next test)."""
    from robustedge.manifold import load_manifold
    from robustedge.manifold.train import VAEConfig

    out = tmp_path / "vae"
    args = ["manifold", "train", "--data", "digits", "--latent-dim", "3", "--hidden", "16",
            "--epochs", "2", "--batch-size", "500", "--lr", "0.01", "--beta", "0.5",
            "--seed", "1", "--device", "cpu"]  # fmt: skip
    r = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2]  # --epochs
    assert m["data"] == "digits" and m["latent_dim"] == 3 and m["global_batch_size"] == 500
    vae = load_manifold(out)
    _, _, x, y = digits_train(2)
    assert vae.encode(x, y).shape == (2, 3)  # --latent-dim
    widths = {tuple(p.shape) for p in vae.vae.parameters()}
    assert any(16 in s for s in widths) and not any(128 in s for s in widths)  # --hidden
    saved = VAEConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    assert saved == VAEConfig(
        latent_dim=3, hidden=16, epochs=2, batch_size=500, lr=0.01, beta=0.5, seed=1, device="cpu"
    )
    empty = tmp_path / "no-data"
    r = CliRunner().invoke(
        cli, ["manifold", "train", "--data", "fashion-mnist", "--data-dir", str(empty),
              "--out", str(tmp_path / "fm")],
    )  # fmt: skip
    assert r.exit_code != 0 and f"data location {empty} does not exist" in str(r.exception)
    if not torch.cuda.is_available():
        r = CliRunner().invoke(cli, [*args[:-1], "cuda", "--out", str(tmp_path / "gpu")])
        assert r.exit_code != 0 and "cuda" in (str(r.exception) + r.output).lower()


def params(module) -> list:
    return [p.detach() for p in module.parameters()]


def digits_train(n: int):
    """(the digits train split as tensors, its first n images and labels)."""
    from robustedge.data import load_dataset

    d = load_dataset("digits")
    x, y = torch.as_tensor(d.x_train), torch.as_tensor(d.y_train)
    return x, y, x[:n], y[:n]


def test_vae_lr_batch_size_beta_and_seed_by_hand():
    """One VAE step by hand: with ``batch_size`` >= the split, an epoch is one Adam step, whose
    first update moves every weight by at most ``lr`` (lr * g / |g|); a smaller batch takes
    more steps. The epoch loss is BCE + ``beta`` * KL: linear in beta. ``seed`` orders the
    batches: another seed, other weights; the same seed, the same ones."""
    from robustedge.manifold.train import VAEConfig, fit_vae
    from robustedge.manifold.vae import CVAE

    x, y, _, _ = digits_train(0)
    torch.manual_seed(0)
    base = CVAE((1, 8, 8), 10, 3, 16)

    def fit(**kw):
        vae = copy.deepcopy(base)
        torch.manual_seed(0)  # the same reparameterisation noise
        cfg = VAEConfig(latent_dim=3, hidden=16, epochs=1, device="cpu", **kw)
        hist = fit_vae(vae, x, y, cfg, torch.device("cpu"))
        moved = max(float((a - b).abs().max()) for a, b in zip(params(vae), params(base)))
        return hist[0]["loss"], moved, vae

    n = len(x)
    loss0, moved, _ = fit(lr=0.01, batch_size=n, beta=0.0)
    assert moved == pytest.approx(0.01, rel=1e-3)  # one Adam step: lr * sign(g)
    _, moved_small, _ = fit(lr=0.001, batch_size=n, beta=0.0)
    assert moved_small == pytest.approx(0.001, rel=1e-3)
    _, moved_two, _ = fit(lr=0.01, batch_size=n // 2 + 1, beta=0.0)
    assert moved_two > 0.015  # two steps move further than the one step of size lr
    loss1, _, _ = fit(lr=0.01, batch_size=n, beta=1.0)
    loss2, _, _ = fit(lr=0.01, batch_size=n, beta=2.0)
    assert loss1 > loss0 and loss2 - loss0 == pytest.approx(2 * (loss1 - loss0), rel=1e-4)
    _, _, a = fit(lr=0.01, batch_size=100, seed=1)
    _, _, b = fit(lr=0.01, batch_size=100, seed=1)
    _, _, c = fit(lr=0.01, batch_size=100, seed=2)
    same = all(torch.equal(p, q) for p, q in zip(params(a), params(b)))
    assert same and not all(torch.equal(p, q) for p, q in zip(params(a), params(c)))


def test_manifold_train_launch_options_reach_the_launcher():
    """The multi-node options of `manifold train` are read and checked before anything runs
    (the torchrun command they make: test_multinode.py)."""
    base = ["manifold", "train", "--out", "/nonexistent/never-written"]
    for extra, msg in [
        (["--nnodes", "2"], "needs --rdzv-endpoint"),
        (["--nnodes", "2", "--rdzv-endpoint", "h:99999"], "HOST:PORT"),
        (["--nnodes", "2", "--rdzv-endpoint", "h:1", "--node-rank", "2"], "0..1"),
        (["--nnodes", "2", "--rdzv-endpoint", "h:1", "--node-rank", "0", "--rdzv-id", "x"],
         "leave it out"),
    ]:  # fmt: skip
        r = CliRunner().invoke(cli, [*base, *extra])
        assert r.exit_code == 2 and msg in r.output, (extra, r.output)
    assert not Path("/nonexistent/never-written").exists()


# ------------------------------------------------------------------------ export


def export_files(folder: Path):
    m = json.loads((folder / "export.json").read_text())
    with np.load(folder / "eval_clean.npz") as c, np.load(folder / "eval_transfer.npz") as t:
        return m, c["x"].copy(), t["x"].copy()


def test_export_settings_change_the_artifacts_and_the_eval_sets(tiny_run, tmp_path):
    """`robustedge export` options (B) against the ExportConfig fields at other values (A, C;
    three exports of the tiny run on 30 images): more calibration inputs, PGD ones among them,
    give another int8 model; --no-parity skips the int8 gate (ONNX is still checked); more
    PGD steps and restarts make a stronger transfer set of the same images; --formats makes
    only those files; another seed draws other images; --out is where it all goes."""
    from robustedge.export import ExportConfig, export_run

    a_cfg = ExportConfig(
        formats=("onnx", "onnx-int8"), calib_samples=4, calib_adv_fraction=0.0, parity=True,
        clean_margin=100, robust_margin=100, transfer_steps=1, transfer_restarts=1,
        eval_images=30, seed=0,
    )  # fmt: skip
    export_run(tiny_run, a_cfg, out=tmp_path / "a")
    a, a_clean, a_adv = export_files(tmp_path / "a")
    out = tmp_path / "b"
    r = CliRunner().invoke(
        cli,
        ["export", str(tiny_run), "--formats", "onnx,onnx-int8", "--calib-samples", "16",
         "--calib-adv-fraction", "0.5", "--no-parity", "--transfer-steps", "5",
         "--transfer-restarts", "2", "--eval-images", "30", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert not (tiny_run / "export" / "export.json").exists()  # --out: not RUN/export
    b, b_clean, b_adv = export_files(out)
    cal = [x["calibration"] for x in (a, b)]
    assert [(c["samples"], c["adv_fraction"]) for c in cal] == [(4, 0.0), (16, 0.5)]
    assert cal[1]["adv_attack"] == b["transfer_attack"] and cal[0]["adv_attack"] is None
    int8 = [x["artifacts"]["onnx-int8"] for x in (a, b)]
    assert int8[0]["sha256"] != int8[1]["sha256"]  # another calibration: another int8 model
    assert a["artifacts"]["onnx"]["sha256"] == b["artifacts"]["onnx"]["sha256"]
    assert int8[0]["parity"]["passed"] is True and "clean_acc" in int8[0]["parity"]
    assert int8[1]["parity"] == {"skipped": True, "passed": None}  # --no-parity
    assert b["artifacts"]["onnx"]["parity"]["passed"] is True  # ONNX is always checked
    assert (a["parity_gate"], b["parity_gate"]) == ("on", "off")
    att = [(x["transfer_attack"]["steps"], x["transfer_attack"]["restarts"]) for x in (a, b)]
    assert att == [(1, 1), (5, 2)]
    assert np.array_equal(b_clean, a_clean) and not np.array_equal(b_adv, a_adv)
    torch_adv = [x["artifacts"]["onnx"]["parity"]["torch_transfer_acc"] for x in (a, b)]
    assert torch_adv[1] < torch_adv[0]  # PGD-5x2 breaks more of the same images than PGD-1
    c_cfg = ExportConfig(
        formats=("onnx",), transfer_steps=1, transfer_restarts=1, eval_images=30, seed=1
    )
    export_run(tiny_run, c_cfg, out=tmp_path / "c")
    c, c_clean, _ = export_files(tmp_path / "c")
    assert set(c["artifacts"]) == {"onnx"} and set(b["artifacts"]) == {"onnx", "onnx-int8"}
    assert not list((tmp_path / "c").glob("*int8*"))
    assert (a["seed"], c["seed"]) == (0, 1) and not np.array_equal(c_clean, a_clean)


# ------------------------------------------------------------------------ recipe sections


def test_recipe_top_level_keys_reach_their_stages(tiny_run, tmp_path):
    """name, seed, data, teacher, compress and export, each set: a cheap real run (a loaded
    teacher, PGD-1) shows name, seed and teacher; the plan shows what data, compress and
    export make, and the seed reaching every stage."""
    from robustedge import api
    from robustedge.errors import RobustEdgeError
    from robustedge.recipe import parse_recipe
    from robustedge.recipe.stages import plan, run_recipe
    from robustedge.training.evaluate import EvalPlan

    text = (
        f"name: my-sweep\nseed: 7\ndata: {{name: digits}}\nteacher: {{load: {tiny_run}}}\n"
        "evaluate: {attacks: [pgd], pgd_steps: 1, restarts: 1}\n"
    )
    out = tmp_path / "out"
    summary = run_recipe(parse_recipe(text), out)
    assert summary["recipe"] == "my-sweep"
    assert json.loads((out / "recipe.json").read_text())["name"] == "my-sweep"
    teacher = out / "teacher"  # teacher.load: the given run, copied byte for byte
    assert (teacher / "model.safetensors").read_bytes() == (
        tiny_run / "model.safetensors"
    ).read_bytes()
    ev = json.loads((teacher / "eval.json").read_text())
    run = eval_copy(tiny_run, tmp_path)
    pgd1 = EvalPlan(attacks=("pgd",), pgd_steps=1, restarts=1)
    seeded = [api.evaluate(run, pgd1, seed=s).to_json()["robust"][0]["acc"] for s in (7, 0)]
    assert ev["seed"] == 7 and ev["robust"][0]["acc"] == seeded[0] != seeded[1]
    text = (
        "name: t\nseed: 7\ndata: {name: synthetic}\n"
        "teacher:\n  train: {model: tiny, epochs: 1, adversary: none, eps: 0.0}\n"
        "compress:\n  - {name: mag, method: magnitude, sparsity: [0.5, 0.8], epochs: 1}\n"
        "export: {formats: [onnx]}\n"
    )
    stages = {s.id: s for s in plan(parse_recipe(text), tmp_path / "p")[0]}
    train = stages["teacher"]
    assert train.kind == "train" and train.config["data"] == "synthetic"
    assert train.config["seed"] == 7 and train.config["epochs"] == 1
    students = {k: s.config for k, s in stages.items() if s.kind == "compress"}
    assert sorted(students) == ["student-mag-s0.5", "student-mag-s0.8"]
    assert {(c["method"], c["sparsity"], c["seed"]) for c in students.values()} == {
        ("magnitude", 0.5, 7),
        ("magnitude", 0.8, 7),
    }
    exports = [s.config for s in stages.values() if s.kind == "export"]
    assert len(exports) == 3 and all(c["formats"] == ["onnx"] and c["seed"] == 7 for c in exports)
    no_export = text.replace("export: {formats: [onnx]}\n", "")
    assert not [s for s in plan(parse_recipe(no_export), tmp_path / "q")[0] if s.kind == "export"]
    empty = tmp_path / "no-data"
    bad = text.replace("{name: synthetic}", f"{{name: fashion-mnist, data_dir: {empty}}}")
    with pytest.raises(RobustEdgeError, match=f"data location {empty} does not exist"):
        plan(parse_recipe(bad), tmp_path / "r")
