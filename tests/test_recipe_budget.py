"""Recipes with budgets in place of sparsities: validation, naming, a cached budget student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustedge.models import count_macs, load_model
from robustedge.recipe import RecipeError, load_recipe, parse_recipe
from robustedge.recipe.stages import plan, run_recipe

BASE = """\
name: t
data: {name: digits}
teacher:
  train: {model: tiny, epochs: 1, adversary: none, eps: 0.0}
compress:
"""


def entry(budget: str, extra: str = "") -> str:
    return BASE + f"  - method: prox\n    budget: {budget}\n{extra}"


@pytest.mark.parametrize(
    "budget,quantity,limit,target,suffix",
    [
        ("{macs: 2M}", "macs", 2e6, None, "macs2M"),
        ("{macs: 150k}", "macs", 1.5e5, None, "macs150k"),
        ("{flash_kb: 64}", "flash_kb", 64.0, None, "flash64kb"),
        ("{latency_ms: 2, target: local}", "latency_ms", 2.0, "local", "latency2ms-local"),
    ],
)
def test_budget_entries_parse_and_name_the_student(budget, quantity, limit, target, suffix):
    r = parse_recipe(entry(budget), "r.yaml")
    (c,) = r.compress
    assert c.sparsity == () and c.budget is not None
    assert (c.budget.quantity, c.budget.limit, c.budget.target) == (quantity, limit, target)
    assert r.students() == ((f"prox-structured-{suffix}", c, None),)


def test_budget_and_sparsity_students_side_by_side():
    text = entry("{macs: 2M}", "  - {name: p, method: prox, sparsity: [0.5, 0.9]}\n")
    text = text.replace("  - method: prox\n    budget", "  - name: small\n    budget")
    r = parse_recipe(text, "r.yaml")
    assert [n for n, _, _ in r.students()] == ["small-macs2M", "p-s0.5", "p-s0.9"]
    _, runs, _ = plan(r, Path("/nonexistent-out"))
    budget_run = next(x for x in runs if x["name"] == "small-macs2M")
    assert budget_run["structured"] and budget_run["sparsity"] is None
    assert budget_run["budget"] == {"quantity": "macs", "limit": 2e6, "target": None}


BAD = [
    # (budget mapping, extra entry lines, expected line, expected fragment)
    ("{macs: lots}", "", 7, "compress[0].budget.macs: bad budget 'macs=lots'"),
    ("{macs: -3}", "", 7, "compress[0].budget.macs: budget macs must be a positive number"),
    ("{macs: 2M, flash_kb: 64}", "", 7, "compress[0].budget: give exactly one of macs"),
    ("{}", "", 7, "compress[0].budget: give exactly one of macs"),
    ("{joules: 3}", "", 7, "compress[0].budget.joules: unknown key 'joules'"),
    ("2M", "", 7, "compress[0].budget: expected a mapping"),
    ("{latency_ms: 2}", "", 7, "compress[0].budget: a latency budget is measured on a board"),
    ("{latency_ms: 2, target: qemu-aarch64}", "", 7, "budget.target: latency budgets cannot"),
    ("{latency_ms: 2, target: vm-armv7}", "", 7, "it is emulated"),
    ("{latency_ms: 2, target: mars}", "", 7, "budget.target: unknown target 'mars'"),
    ("{macs: 2M, target: local}", "", 7, "compress[0].budget.target: a macs budget needs no"),
    ("{macs: 2M}", "    sparsity: 0.5\n", 7, "give either 'sparsity' or 'budget'"),
    ("{macs: 2M}", "    structured: false\n", 8, "compress[0].structured: a budget makes a"),
    ("{macs: 2M}", "    scope: global\n", 8, "compress[0].scope: a budget student ranks"),
    ("{macs: 2M}", "    epochs: many\n", 8, "compress[0].epochs: expected int"),
]


@pytest.mark.parametrize("budget,extra,line,fragment", BAD)
def test_bad_budgets_name_line_and_key(budget, extra, line, fragment):
    with pytest.raises(RecipeError) as e:
        parse_recipe(entry(budget, extra), "r.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"r.yaml:{line}: "), msg
    assert fragment in msg, msg


def test_budget_method_must_be_structured_capable():
    text = BASE + "  - method: admm\n    budget: {macs: 2M}\n"
    with pytest.raises(RecipeError, match=r"^r.yaml:6: compress\[0\].method: a budget trains"):
        parse_recipe(text, "r.yaml")


def test_missing_sparsity_or_budget():
    with pytest.raises(
        RecipeError, match=r"^r.yaml:6: compress\[0\]: missing key 'sparsity'.*budget"
    ):
        parse_recipe(BASE + "  - method: prox\n", "r.yaml")


RUN = """\
name: b
data: {{name: digits}}
teacher:
  load: {teacher}
evaluate: {{attacks: [pgd], eps: [0.1], pgd_steps: 2, restarts: 1}}
compress:
  - name: small
    method: prox
    adversary: none
    eps: 0.0
    budget: {{macs: {macs}}}
    epochs: 1
    finetune_epochs: 1
"""


def test_budget_student_meets_its_budget_and_is_cached(tmp_path, tiny_run):
    """A MACs budget of half the teacher's: the student is structured, under the budget, its
    metrics record the search, and a second run reuses it."""
    from robustedge.data import load_dataset

    teacher, _ = load_model(tiny_run)
    shape = load_dataset("digits").input_shape
    teacher_macs = count_macs(teacher, shape)["dense"]
    limit = teacher_macs // 2
    path = tmp_path / "b.yaml"
    path.write_text(RUN.format(teacher=tiny_run, macs=limit))
    recipe = load_recipe(path)
    out = tmp_path / "out"
    summary = run_recipe(recipe, out)
    name = f"small-macs{recipe.compress[0].budget.label[4:]}"
    assert {s["id"]: s["status"] for s in summary["stages"]}[f"student-{name}"] == "done"
    run = out / "students" / name
    metrics = json.loads((run / "metrics.json").read_text())
    b = metrics["budget"]
    assert b["quantity"] == "macs" and b["limit"] == limit and b["met"]
    assert b["teacher"] == teacher_macs and b["student"] <= limit < teacher_macs
    assert metrics["structured"]
    (entry_,) = [r for r in summary["runs"] if r["name"] == name]
    assert entry_["structured"] is True  # the summary says what the search built
    student, _ = load_model(run)
    assert count_macs(student, shape)["dense"] == b["student"]  # re-measured, not predicted
    assert (run / "eval.json").is_file()
    again = run_recipe(load_recipe(path), out)
    assert {s["id"]: s["status"] for s in again["stages"]}[f"student-{name}"] == "cached"


def test_demo_recipe_has_a_budget_student():
    r = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "digits.yaml")
    budgets = [c.budget for c in r.compress if c.budget is not None]
    assert budgets and budgets[0].quantity == "macs"
    assert r.teacher.train["model_kwargs"]["width"] > 1  # MACs, not overhead, set its latency


def test_summary_takes_a_budget_students_kind_from_its_finished_metrics(tmp_path):
    """A flash budget may be met by zeroed weights: the plan cannot know, so the summary's
    entry takes ``structured`` from the finished run (and keeps the plan's when the run is
    missing or unreadable, or for the teacher)."""
    from robustedge.recipe.stages import as_trained

    planned = {"name": "s", "path": "students/s", "role": "student", "structured": True}
    assert as_trained(tmp_path, planned) == planned  # not trained yet
    run = tmp_path / "students" / "s"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{not json")
    assert as_trained(tmp_path, planned) == planned
    (run / "metrics.json").write_text(json.dumps({"structured": False, "kind": "compress"}))
    assert as_trained(tmp_path, planned) == {**planned, "structured": False}
    assert planned["structured"] is True  # the plan's entry is not modified in place
    teacher = {**planned, "role": "teacher"}
    assert as_trained(tmp_path, teacher) == teacher


@pytest.mark.parametrize(
    "budget,target,resume,message",
    [
        (None, "local", False, "--budget-target needs --budget latency_ms=..."),
        ("macs=2M", None, True, "--resume is not supported with --budget"),
        (
            "latency_ms=2",
            "qemu-aarch64",
            False,
            "cannot be measured on qemu-aarch64: it is emulated",
        ),
        ("latency_ms=2", "vm-aarch64", False, "cannot be measured on vm-aarch64: it is emulated"),
    ],
)
def test_compress_student_refuses_before_loading_the_teacher(
    tmp_path, budget, target, resume, message
):
    """The one place that chooses sparsity or budget refuses in one line, before the teacher
    (here a folder that does not exist) is read or anything is written."""
    from robustedge.compress import CompressConfig
    from robustedge.errors import RobustEdgeError
    from robustedge.recipe.students import compress_student

    cfg = CompressConfig(teacher=str(tmp_path / "no-teacher"))
    out = tmp_path / "out"
    with pytest.raises(RobustEdgeError) as info:
        compress_student(cfg, out, budget, target, resume=resume)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()


def test_resolve_budget_takes_a_string_or_a_budget():
    from robustedge.compress.budget import Budget, Quantity
    from robustedge.recipe.students import resolve_budget

    assert resolve_budget("macs=2M") == Budget(Quantity.MACS, 2e6)
    b = Budget(Quantity.LATENCY_MS, 2.0, "local")
    assert resolve_budget(b) is b and resolve_budget("latency_ms=2", "local") == b
    with pytest.raises(ValueError, match="names target 'local', not 'ssh://pi@board'"):
        resolve_budget(b, "ssh://pi@board")
