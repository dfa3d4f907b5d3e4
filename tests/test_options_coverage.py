"""Every CLI option and every recipe key is set by some test.

A test "names" an option when the tests folder passes its flag (``"--calib-samples"``) or sets
the config field behind it (``calib_samples=...``, ``calib_samples: ...`` in a recipe text,
``"calib_samples": ...`` in a dict). A new option or recipe key without such a test fails here,
with its name. What the option changes is checked by the test that sets it (this check only
finds the options nobody set); ``test_weight_decay_option_shrinks_the_weights`` below is the
one that was missing.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import click
import yaml

TESTS = Path(__file__).resolve().parent
# options no test can exercise here, with the reason
NOT_RUN = {
    ("device setup-qemu", "--force"): "rebuilds the ARM userland from Debian's archive (network)",
    ("device setup-vm", "--force"): "rebuilds the VM image from Debian's archive (network)",
}


def _text() -> str:
    return "\n".join(p.read_text() for p in sorted(TESTS.glob("*.py")))


def _sets(text: str, name: str) -> bool:
    pat = rf"\b{re.escape(name)}\s*(=[^=]|:)|[\"']{re.escape(name)}[\"']\s*[:,\]]"
    return re.search(pat, text) is not None


def _commands(cmd, path=()):
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, path + (name,))
    else:
        yield " ".join(path), cmd


def test_every_cli_option_is_set_by_a_test():
    from robustedge.cli import cli

    text = _text()
    missing, seen = [], 0
    for path, cmd in _commands(cli):
        for p in cmd.params:
            flags = [o for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
            if not isinstance(p, click.Option) or not flags or flags == ["--help"]:
                continue
            seen += 1
            if (path, flags[0]) in NOT_RUN:
                continue
            by_flag = any(re.search(rf"[\"' ]{re.escape(f)}\b", text) for f in flags)
            if not (by_flag or _sets(text, p.name)):
                missing.append(f"{path} {flags[0]}")
    assert seen > 100  # the walk found the commands
    assert not missing, "CLI options no test sets: " + ", ".join(missing)


def test_every_recipe_key_is_set_by_a_test():
    """Every field of every recipe section (the sections' own keys and the stage configs'
    fields they accept)."""
    from robustedge.compress.config import CompressConfig
    from robustedge.export.config import ExportConfig
    from robustedge.recipe import schema
    from robustedge.training.config import TrainConfig
    from robustedge.training.evaluate import EvalPlan

    text = _text()
    sections = [
        schema.Recipe, schema.DataSpec, schema.TeacherSpec, schema.CompressSpec,
        schema.BudgetSpec, schema.TargetSpec, schema.DeviceSpec, TrainConfig, EvalPlan,
        ExportConfig, CompressConfig,
    ]  # fmt: skip
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in sections
        for f in dataclasses.fields(cls)
        if not _sets(text, f.name)
    ]
    assert not missing, "recipe keys no test sets: " + ", ".join(missing)


def test_the_check_finds_an_unset_name():
    assert _sets("cfg = X(calib_samples=3)", "calib_samples")
    assert _sets("export: {calib_samples: 3}", "calib_samples")
    assert _sets('{"calib_samples": 3}', "calib_samples")
    assert not _sets("assert cfg.calib_samples == 3", "calib_samples")
    assert not _sets("calib_samples == 3", "calib_samples")


def test_weight_decay_option_shrinks_the_weights(cli, tmp_path):
    """`train --weight-decay 0.5` is recorded and decays the weights: the same run (same seed,
    SGD) without it ends with a larger weight norm."""
    from safetensors.torch import load_file

    args = ["train", "--model", "tiny", "--adversary", "none", "--epochs", "1", "--seed", "0"]
    args += ["--optimizer", "sgd", "--lr", "0.05", "--no-progress"]
    runs = {}
    for wd in ("0", "0.5"):
        out = tmp_path / f"wd{wd}"
        r = cli(*args, "--weight-decay", wd, "--out", str(out))
        assert r.returncode == 0, r.stderr
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        assert cfg["weight_decay"] == float(wd) and cfg["optimizer"] == "sgd"
        w = load_file(str(out / "model.safetensors"))
        runs[wd] = sum(float(v.double().pow(2).sum()) for k, v in w.items() if "weight" in k)
        assert json.loads((out / "metrics.json").read_text())["clean_acc"] > 0.1
    assert runs["0.5"] < 0.8 * runs["0"], runs
