"""The worst-case suite wired end to end: `robustedge eval/train/compress --suite`, the recipe's
``evaluate: suite:``, and the report's headline that names the suite and its attacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from robustedge.attacks import AttackSpec, build_attack, predict
from robustedge.attacks.suite import AttackSuite, build_suite, worst_case_accuracy
from robustedge.cli import main
from robustedge.errors import RobustEdgeError
from robustedge.recipe import parse_recipe

QUICK = "worst-case-quick"


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run evaluated by the CLI with PGD-3 and the quick suite."""
    run = tmp_path_factory.mktemp("suite") / "tiny"
    shutil.copytree(tiny_run, run)
    r = run_cli(
        "eval", str(run), "--attack", "pgd", "--steps", "3", "--restarts", "1", "--suite", QUICK
    )
    assert r.returncode == 0, r.stderr
    assert f"suite {QUICK} eps=0.1: worst case of PGD-10x2, APGD-CE-25" in r.stdout
    assert "worst case per image" in r.stdout
    return run


def test_eval_writes_the_suite_next_to_the_single_attack_rows(evaluated):
    ev = json.loads((evaluated / "eval.json").read_text())
    assert [(r["attack"], r["steps"], r["restarts"]) for r in ev["robust"]] == [("pgd", 3, 1)]
    (s,) = ev["suites"]
    suite = build_suite(QUICK, 0.1)
    assert s["suite"] == QUICK and s["eps"] == 0.1 and s["n"] == ev["n"] == 450
    assert s["attacks"] == suite.to_dict()["attacks"]  # every attack's full spec
    assert s["label"] == "worst case of PGD-10x2, APGD-CE-25, APGD-DLR-25, Square-200"
    accs = [r["acc"] for r in s["per_attack"]]
    assert [r["attack"] for r in s["per_attack"]] == ["pgd", "apgd-ce", "apgd-dlr", "square"]
    assert [(r["steps"], r["restarts"]) for r in s["per_attack"]] == [
        (10, 2),
        (25, 1),
        (25, 1),
        (200, 1),
    ]
    assert all(0.0 <= a <= s["clean_acc"] for a in accs)
    assert s["worst_case_acc"] <= min(accs)
    assert s["clean_acc"] == pytest.approx(ev["clean_acc"])


def test_worst_case_is_per_image_not_an_aggregate_of_accuracies(trained_tiny):
    """Two attacks that break different images: the suite's figure is the share of images
    that survive both (checked against each attack run alone), strictly below the lower of
    the two accuracies, so a min / max / mean of per-attack accuracies would fail here."""
    model, x, y = trained_tiny
    x, y = x[:240], y[:240]
    eps = 0.05
    suite = AttackSuite("pair", (AttackSpec("fgsm", eps), AttackSpec("square", eps, steps=100)))
    res = worst_case_accuracy(model, x, y, suite, seed=4)
    clean = (predict(model, x) == y).numpy()
    alone = []
    for spec in suite.specs:
        attack = build_attack(model, spec, generator=torch.Generator().manual_seed(4))
        idx = torch.from_numpy(np.flatnonzero(clean))
        ok = np.zeros(len(x), dtype=bool)
        ok[idx.numpy()] = (predict(model, attack.perturb(x[idx], y[idx]).cpu()) == y[idx]).numpy()
        alone.append(ok)
    per_image = float(np.logical_and(*alone).mean())
    accs = [float(a.mean()) for a in alone]
    assert [r["acc"] for r in res.per_attack] == pytest.approx(accs)
    assert res.worst_case_acc == pytest.approx(per_image)
    assert per_image < min(accs)  # the attacks broke different images: the test can tell
    assert res.worst_case_acc not in (min(accs), max(accs), float(np.mean(accs)))


def _exit_line(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_unknown_suite_is_one_line_listing_the_names(tiny_run, tmp_path, capsys):
    r = run_cli("eval", str(tiny_run), "--suite", "strongest")
    assert r.returncode == 2 and r.stdout == ""
    line = (
        "error: unknown attack suite 'strongest' (known: autoattack, autoattack-quick, "
        "worst-case, worst-case-quick)"
    )
    assert r.stderr.strip() == line
    # train and compress refuse it before any training or output
    out = tmp_path / "out"
    args = ["--model", "tiny", "--epochs", "1", "--out", str(out), "--suite", "strongest"]
    assert _exit_line(["train", *args], capsys) == line
    assert _exit_line(["compress", "--teacher", str(tiny_run), *args[4:]], capsys) == line
    assert not out.exists()


def test_compress_records_the_suite(tiny_run, tmp_path):
    """The library call behind `compress --suite`: the student's metrics.json holds the suite
    result; an unknown name fails before any training."""
    from robustedge.compress import CompressConfig, compress_run

    with pytest.raises(RobustEdgeError, match="known: autoattack, autoattack-quick, worst-case"):
        compress_run(CompressConfig(teacher=str(tiny_run)), tmp_path / "s", eval_suite="x")
    cfg = CompressConfig(
        teacher=str(tiny_run), adversary="none", epochs=1, finetune_epochs=0, sparsity=0.5
    )
    m = compress_run(cfg, tmp_path / "student", eval_attacks=("fgsm",), eval_suite=QUICK)
    (s,) = m["suites"]
    assert s["suite"] == QUICK and s["eps"] == 0.1 and len(s["per_attack"]) == 4
    saved = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert saved["suites"] == json.loads(json.dumps(m["suites"]))
    assert s["worst_case_acc"] <= min(r["acc"] for r in s["per_attack"])


def test_no_suite_no_extra_cost(trained_tiny):
    """Without a suite, evaluate() runs only its attacks and writes no "suites" key."""
    from robustedge.training.evaluate import EvalPlan, evaluate, evaluate_plan

    model, x, y = trained_tiny
    assert "suites" not in evaluate(model, x[:8], y[:8], [AttackSpec("fgsm", 0.1)])
    assert EvalPlan().suites() == []
    plan = EvalPlan(attacks=("fgsm",), eps=(0.05, 0.1), suite=QUICK)
    assert [(s.name, s.eps) for s in plan.suites()] == [(QUICK, 0.05), (QUICK, 0.1)]
    assert "suites" not in evaluate_plan(model, x[:8], y[:8], EvalPlan(attacks=("fgsm",)))


RECIPE = """\
name: suite
data: {{name: digits}}
teacher:
  load: {teacher}
evaluate:
  attacks: []
  suite: {suite}
"""


def test_recipe_validates_the_suite(tiny_run):
    r = parse_recipe(RECIPE.format(teacher=tiny_run, suite=QUICK), "r.yaml")
    assert r.evaluate.suite == QUICK
    with pytest.raises(RobustEdgeError) as e:
        parse_recipe(RECIPE.format(teacher=tiny_run, suite="strong"), "r.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("r.yaml:7: evaluate.suite: unknown attack suite 'strong'")
    assert "worst-case, worst-case-quick" in msg
    with pytest.raises(RobustEdgeError, match="evaluate.suite"):
        parse_recipe(RECIPE.format(teacher=tiny_run, suite="[a, b]"), "r.yaml")


def test_recipe_cache_key_unchanged_without_a_suite(tiny_run, tmp_path):
    from robustedge.recipe.stages import plan

    text = RECIPE.format(teacher=tiny_run, suite=QUICK).replace("  attacks: []\n", "")
    with_suite = parse_recipe(text)
    without = parse_recipe(text.replace(f"  suite: {QUICK}\n", ""))
    ev = {s.id: s for s in plan(with_suite, tmp_path)[0]}["eval-teacher"]
    assert ev.config["suite"] == QUICK
    ev = {s.id: s for s in plan(without, tmp_path)[0]}["eval-teacher"]
    assert "suite" not in ev.config  # evaluations cached before suites existed stay valid


def test_recipe_evaluation_plan_carries_the_suite(tiny_run):
    from robustedge.recipe.stages import eval_plan

    recipe = parse_recipe(RECIPE.format(teacher=tiny_run, suite=QUICK))
    plan = eval_plan(recipe)  # what the eval stage of every model runs (eval_run)
    assert plan.suite == QUICK and [s.name for s in plan.suites()] == [QUICK]


def test_report_headline_names_the_suite_and_its_attacks(evaluated, tmp_path):
    from robustedge.report import build_report

    ev = json.loads((evaluated / "eval.json").read_text())
    acc = ev["suites"][0]["worst_case_acc"]
    rep = build_report([evaluated], tmp_path / "r.html")
    md, html = rep.md_path.read_text(), rep.html_path.read_text()
    label = "worst case of PGD-10x2, APGD-CE-25, APGD-DLR-25, Square-200"
    row = next(ln for ln in md.splitlines() if ln.startswith("| tiny |"))
    header = next(ln for ln in md.splitlines() if ln.startswith("| model |"))
    cells = dict(zip(*([c.strip() for c in ln.strip("|").split("|")] for ln in (header, row))))
    assert cells["robust % (headline)"] == f"{100 * acc:.1f}"
    assert cells["headline attack"] == f"{QUICK}: {label} (eps=0.1, n=450)"
    assert cells[f"{QUICK} eps=0.1 %"] == f"{100 * acc:.1f}"
    assert f"{QUICK} eps=0.1 = {label}" in md and label in html
    # the summary's robust figure names its suite; the single attacks keep their names
    (line,) = [ln for ln in rep.summary.splitlines() if ln.strip().startswith("tiny ")]
    assert line.endswith(f"robust {100 * acc:5.1f}% ({QUICK} eps=0.1)")
    assert "pgd eps=0.1 %" in header and "fgsm eps=0.1 %" in header


def test_headline_without_a_suite_is_the_strongest_named_attack(tiny_run, tmp_path):
    from robustedge.report.collect import headline, load_run

    info = load_run(tiny_run)  # metrics.json: FGSM and PGD-20x5, no suite
    h = headline(info)
    key = min(("fgsm eps=0.1", "pgd eps=0.1"), key=lambda k: info.accuracy[k])
    assert h is not None and not h.is_suite and h.key == key
    assert h.acc == info.accuracy[key] == min(info.accuracy.values())
    assert h.label == f"{key} (strongest single attack; no suite run)"
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    m = json.loads((bad / "metrics.json").read_text())
    (bad / "metrics.json").write_text(json.dumps({**m, "suites": [{"suite": "x"}]}))
    with pytest.raises(RobustEdgeError, match="malformed suite result"):
        load_run(bad)


def eval_help() -> str:
    """`robustedge eval --help`, unwrapped (one line per option)."""
    from click.testing import CliRunner

    from robustedge.cli import cli

    r = CliRunner().invoke(cli, ["eval", "--help"], terminal_width=10_000, max_content_width=10_000)
    assert r.exit_code == 0, r.output
    return r.output


def option_help(text: str, option: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith(option + " ")]
    return line


def test_eval_help_lists_every_attack_and_suite_from_the_registries():
    """`--attack`'s help lists every registered attack (a plugin's too), `--suite`'s every
    registered suite with its real attacks."""
    from robustedge.attacks import ATTACKS
    from robustedge.attacks.fgsm import FGSM
    from robustedge.attacks.suite import SUITES, short_label

    text = eval_help()
    attack = option_help(text, "--attack")
    assert all(f" {n} " in attack.replace("|", " ").replace(".", " ") for n in ATTACKS)
    assert "apgd-ce | apgd-dlr" in attack and "trades" in attack
    suite = option_help(text, "--suite")
    for name in SUITES.names():
        attacks = ", ".join(short_label(s) for s in build_suite(name, 0.1).specs)
        assert f"{name} ({attacks})" in suite
    assert "worst-case (PGD-20x5, APGD-CE-100, APGD-DLR-100, Square-1000)" in suite
    assert "square" in option_help(text, "--square-queries")
    assert "square" not in option_help(text, "--pgd-steps")
    ATTACKS.register("zz-plugin", FGSM)
    try:
        assert "zz-plugin" in option_help(eval_help(), "--attack")
    finally:
        ATTACKS.unregister("zz-plugin")
