"""Recipes: up-front validation with line numbers, cached stages, `robustedge run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _recipe_run import copy_run, recipe_run, write_recipe
from conftest import run_cli
from robustedge.errors import RobustEdgeError
from robustedge.recipe import RecipeError, load_recipe, parse_recipe
from robustedge.recipe.stages import plan, run_recipe

ROOT = Path(__file__).resolve().parents[1]
BASE = """\
name: t
data: {name: digits}
teacher:
  train: {model: tiny, epochs: 1, adversary: none, eps: 0.0}
"""


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_run) -> Path:
    return recipe_run(tmp_path_factory, tiny_run)


def statuses(summary) -> dict:
    return {s["id"]: s["status"] for s in summary["stages"]}


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    r = load_recipe(path)
    assert r.students() and r.export is not None and r.devices is not None


def test_digits_recipe_is_the_demo():
    r = load_recipe(ROOT / "recipes" / "digits.yaml")
    assert r.teacher.train["model"] == "lenet5" and r.teacher.train["adversary"] == "pgd"
    assert r.teacher.train["eps"] == 0.1
    sweeps = {c.name: c for c in r.compress}
    assert any(c.sparsity == (0.9, 0.95) and not c.options.get("structured") for c in r.compress)
    assert any(c.options.get("structured") for c in sweeps.values())
    assert set(r.export.made()) >= {"onnx", "tflite-int8"}
    qemu = [t for t in r.devices.targets if t.target == "qemu-aarch64"]
    assert qemu and qemu[0].optional


BAD = [
    # (text appended to / replacing BASE, expected line, expected fragment)
    ("\nfoo: 1\n", 6, "foo: unknown key 'foo'"),
    ("compress:\n  - method: prox\n    sparsity: [0.5, 1.2]\n", 7, "compress[0].sparsity[1]"),
    (
        "compress:\n  - method: prox\n    sparsity: 0.5\n    epochs: many\n",
        8,
        "epochs: expected int",
    ),
    ("compress:\n  - method: prox\n    sparsity: 0.5\n    bogus: 1\n", 8, "unknown key 'bogus'"),
    (
        "compress:\n  - method: admm\n    structured: true\n    sparsity: 0.5\n",
        7,
        "compress[0].structured: --structured is implemented for --method harp and magnitude "
        "and prox only",
    ),
    ("devices:\n  targets: [local]\n", 5, "need an 'export' section"),
    (
        "export: {formats: [onnx]}\ndevices:\n  targets: [local, qemu-armv7]\n",
        7,
        "qemu-armv7 cannot run onnx",
    ),
    ("export: {formats: [onnx, pdf]}\n", 5, "export.formats[1]: unknown export format 'pdf'"),
    ("evaluate: {attacks: [onmanifold]}\n", 5, "needs 'manifold"),
    ("evaluate:\n  eps: [0]\n", 6, "evaluate.eps[0]: eps must lie in (0, 1], got 0.0"),
    ("evaluate:\n  eps: [0.1,\n    0]\n", 7, "evaluate.eps[1]: eps must lie in (0, 1], got 0.0"),
    ("evaluate:\n  attacks:\n    - pgd\n    - cw\n", 8, "evaluate.attacks[1]: unknown attack 'cw'"),
    ("evaluate:\n  eps: [0.1]\n  pgd_steps: 0\n", 7, "evaluate.pgd_steps: pgd_steps must be >= 1"),
    (
        "evaluate: {suite: strongest}\n",
        5,
        "evaluate.suite: unknown attack suite 'strongest' (known: autoattack, autoattack-quick, "
        "worst-case, worst-case-quick)",
    ),
    ("export: {clean_margin: -1}\n", 5, "clean_margin"),
    ("devices: {targets: [mars]}\nexport: {}\n", 5, "unknown target 'mars'"),
    ("devices: {targets: [local], runs: 10}\nexport: {}\n", 5, "runs must be >= 200"),
]


@pytest.mark.parametrize("extra,line,fragment", BAD)
def test_bad_recipes_name_line_and_key(extra, line, fragment):
    with pytest.raises(RecipeError) as e:
        parse_recipe(BASE + extra, "r.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"r.yaml:{line}: "), msg
    assert fragment in msg, msg


def test_evaluate_section_is_the_eval_plan(tiny_run, tmp_path):
    """The recipe's ``evaluate:`` builds the same EvalPlan as `robustedge eval`; a recipe that
    names its attacks keeps the eval stage's config (and so its cache) of before."""
    from robustedge.recipe.stages import eval_specs
    from robustedge.training.evaluate import EvalPlan

    base = BASE.replace("  train: {model: tiny, epochs: 1, adversary: none, eps: 0.0}", "")
    base += f"  load: {tiny_run}\n"
    assert parse_recipe(base).evaluate == EvalPlan()  # attacks: fgsm, pgd by default
    text = base + "evaluate: {attacks: [pgd, apgd-ce], eps: [0.1], pgd_steps: 3, restarts: 1}\n"
    r = parse_recipe(text)
    assert isinstance(r.evaluate, EvalPlan)
    assert [(s.name, s.steps, s.restarts) for s in eval_specs(r)] == [
        ("pgd", 3, 1),
        ("apgd-ce", 3, 1),
    ]
    (stage,) = [s for s in plan(r, tmp_path / "out")[0] if s.kind == "evaluate"]
    assert stage.config == {
        "attacks": ["pgd", "apgd-ce"],
        "eps": [0.1],
        "pgd_steps": 3,
        "square_queries": None,
        "restarts": 1,
        "manifold": None,
        "eta": 0.3,
        "corruptions": False,
        "seed": 0,
    }


def test_bad_teacher_config_and_yaml():
    bad = BASE.replace("epochs: 1", "epochs: 0")
    with pytest.raises(RecipeError, match=r"^r.yaml:4: teacher.train.epochs: epochs must be > 0"):
        parse_recipe(bad, "r.yaml")
    with pytest.raises(RecipeError, match=r"^r.yaml:4: teacher.train.modell: unknown key"):
        parse_recipe(BASE.replace("model:", "modell:"), "r.yaml")
    with pytest.raises(RecipeError, match=r"^r.yaml:3: invalid YAML"):
        parse_recipe("name: t\ndata: {name: digits\nteacher: x\n", "r.yaml")
    with pytest.raises(RecipeError, match="give exactly one of 'train'"):
        parse_recipe(BASE + "  load: somewhere\n", "r.yaml")
    with pytest.raises(RecipeError, match="duplicate key"):
        parse_recipe(BASE + "name: u\n", "r.yaml")


def test_cli_reports_bad_recipe_in_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(BASE + "compress:\n  - {method: prox, sparsity: 1.2}\n")
    res = run_cli("run", str(p), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert f"{p}:6: compress[0].sparsity[0]" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing ran


def test_run_writes_runs_records_and_summary(done):
    summary = json.loads((done / "summary.json").read_text())
    assert set(statuses(summary).values()) == {"done"}
    names = [r["name"] for r in summary["runs"]]
    assert names == ["teacher", "prox-s0.5", "prox-s0.8"]
    for r in summary["runs"]:
        run = done / r["path"]
        for f in ("metrics.json", "eval.json", "export/export.json", "device/local/results.json"):
            assert (run / f).is_file(), f
    evals = json.loads((done / "students/prox-s0.8/eval.json").read_text())
    assert {a["attack"] for a in evals["robust"]} == {"pgd", "square"}
    assert "corruptions" in evals
    rec = json.loads((done / "stages/export-prox-s0.5/stage.json").read_text())
    assert rec["upstream"].keys() == {"student-prox-s0.5"} and rec["outputs"]
    m = json.loads((done / "students/prox-s0.8/metrics.json").read_text())
    assert m["sparsity"]["global"] == pytest.approx(0.8, abs=0.01)


def test_second_run_skips_everything(done, tmp_path, tiny_run):
    out = copy_run(done, tmp_path / "out")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_run))
    summary = run_recipe(recipe, out)
    assert set(statuses(summary).values()) == {"cached"}


def test_changed_margins_redo_only_export_and_downstream(done, tmp_path, tiny_run):
    out = copy_run(done, tmp_path / "out")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_run, margin=40.0))
    st = statuses(run_recipe(recipe, out))
    redone = {k for k, v in st.items() if v == "done"}
    assert redone == {k for k in st if k.startswith(("export-", "device-"))}
    assert all(st[k] == "cached" for k in st if k.startswith(("teacher", "student-", "eval-")))


def test_corrupt_or_missing_outputs_are_redone(done, tmp_path, tiny_run):
    out = copy_run(done, tmp_path / "out")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_run))
    (out / "students/prox-s0.5/metrics.json").write_text("{ truncated")
    (out / "stages/eval-teacher/stage.json").unlink()  # as if it crashed before finishing
    st = statuses(run_recipe(recipe, out))
    assert st["student-prox-s0.5"] == "done" and st["eval-teacher"] == "done"
    assert st["teacher"] == "cached" and st["student-prox-s0.8"] == "cached"
    assert st["export-prox-s0.8"] == "cached"


def test_optional_target_skipped_with_note(tmp_path, monkeypatch, tiny_run):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # no qemu userland
    text = BASE.replace(
        "  train: {model: tiny, epochs: 1, adversary: none, eps: 0.0}", f"  load: {tiny_run}"
    )
    optional = (
        text + "export: {}\ndevices:\n  targets: [local, {target: qemu-aarch64, optional: true}]\n"
    )
    stages, _, notes = plan(parse_recipe(optional), tmp_path / "out")
    skipped = [s for s in stages if s.optional_note]
    assert skipped and all("qemu-aarch64" in s.id for s in skipped)
    assert any("optional target qemu-aarch64 skipped" in n for n in notes)
    required = text + "export: {}\ndevices:\n  targets: [qemu-aarch64]\n"
    with pytest.raises(RobustEdgeError, match="device target qemu-aarch64"):
        plan(parse_recipe(required), tmp_path / "out")


def test_cli_run_and_check(done, tmp_path, tiny_run):
    out = copy_run(done, tmp_path / "out")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_run)
    res = run_cli("run", str(recipe), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "0 stage(s) run" in res.stdout and "[     cached] export-prox-s0.8" in res.stdout
    res = run_cli("run", str(recipe), "--check")
    assert res.returncode == 0 and "1 teacher, 2 student(s), 1 target(s)" in res.stdout


def test_device_override_reaches_every_training_stage():
    r = load_recipe(Path(__file__).resolve().parent.parent / "recipes" / "digits.yaml")
    cpu = r.with_device("cpu")
    assert r.teacher.train["device"] == "auto"  # the original is left alone
    assert cpu.teacher.train["device"] == "cpu"
    assert all(c.options["device"] == "cpu" for c in cpu.compress)
    from robustedge.compress import CompressConfig
    from robustedge.training.config import TrainConfig

    TrainConfig.from_dict(cpu.teacher.train)
    for c in cpu.compress:  # a budget entry has no sparsity: the budget search picks it
        sparsity = c.sparsity[0] if c.sparsity else 0.5
        assert CompressConfig(teacher="t", **{**c.options, "sparsity": sparsity}).device == "cpu"
