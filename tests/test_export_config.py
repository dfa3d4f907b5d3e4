"""ExportConfig (one default per setting, shared by `robustedge export`, the recipe and the API)
and the FORMATS registry (the only list of export format names: a format is one descriptor and
its builder, registered)."""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Iterator

import pytest

from robustedge.config import FieldError, default_of
from robustedge.export import FORMATS, ExportConfig, ExportFormat, Family, register_format
from robustedge.export.formats import (
    FILES,
    SPARSE_OF,
    board_choice,
    board_order,
    is_quantized,
    of_family,
    parse_formats,
)
from robustedge.recipe import RecipeError, parse_recipe

RECIPE = """\
name: t
seed: 3
teacher:
  train: {model: tiny, epochs: 1, adversary: none, eps: 0.0}
"""
FAST = {"transfer_steps": 2, "transfer_restarts": 1}


def copy_onnx(job, fmt: ExportFormat) -> Path:
    """A toy builder: the ONNX model, copied (run by onnxruntime like onnx)."""
    return Path(shutil.copy2(job.onnx, job.out(fmt)))


def bent_onnx(job, fmt: ExportFormat) -> Path:
    """A toy builder whose model is wrong: the ONNX model with its weights scaled by -1."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(job.onnx))
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype.kind == "f" and w.ndim >= 2:
            init.CopyFrom(numpy_helper.from_array(-w, init.name))
    onnx.save(model, str(job.out(fmt)))
    return job.out(fmt)


def toy(name: str = "onnx-copy", build=copy_onnx, rank: int = 5) -> ExportFormat:
    return ExportFormat(name, f"model_{name}.onnx", Family.ONNX, build, board_rank=rank)


@contextlib.contextmanager
def registered(fmt: ExportFormat) -> Iterator[ExportFormat]:
    register_format(fmt)
    try:
        yield fmt
    finally:
        FORMATS.unregister(fmt.name)


# ------------------------------------------------------------------------- ExportConfig


def test_round_trip_and_unknown_keys():
    cfg = ExportConfig(
        formats="tflite-int8, onnx",
        calib_samples=50,
        calib_adv_fraction=0.5,
        clean_margin=0.5,
        robust_margin=4.0,
        parity=False,
        transfer_steps=3,
        transfer_restarts=2,
        eval_images=300,
        seed=7,
    )
    d = cfg.to_dict()
    assert d == {
        "formats": ["tflite-int8", "onnx"],
        "calib_samples": 50,
        "calib_adv_fraction": 0.5,
        "clean_margin": 0.5,
        "robust_margin": 4.0,
        "parity": False,
        "transfer_steps": 3,
        "transfer_restarts": 2,
        "eval_images": 300,
        "seed": 7,
    }
    assert ExportConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert ExportConfig.from_dict(ExportConfig().to_dict()) == ExportConfig()
    assert cfg.made() == ("onnx", "tflite-int8") and cfg.replace(seed=1).seed == 1
    with pytest.raises(ValueError, match="unknown config keys: check_parity"):
        ExportConfig.from_dict({**d, "check_parity": True})


def test_defaults_come_from_their_one_place():
    from robustedge.attacks import AttackSpec
    from robustedge.export.evalsets import DEFAULT_CALIB_SAMPLES
    from robustedge.export.parity import Margins

    cfg, pgd = ExportConfig(), AttackSpec.default("pgd")
    assert (cfg.transfer_steps, cfg.transfer_restarts) == (pgd.steps, pgd.restarts) == (20, 5)
    assert cfg.calib_samples == DEFAULT_CALIB_SAMPLES == 200 and cfg.calib_adv_fraction == 0.0
    assert cfg.margins() == Margins() == Margins(1.0, 2.0)
    assert cfg.parity is True and cfg.seed == 0
    assert cfg.made() == ("onnx", "tflite-float32", "tflite-int8")


@pytest.mark.parametrize(
    "kw,key,message",
    [
        ({"formats": ("onnx", "pdf")}, "formats[1]", "unknown export format 'pdf' (known: {})"),
        ({"formats": 3}, "formats", "formats must be a list of names, got 3"),
        (
            {"clean_margin": -1.0},
            "clean_margin",
            "clean_margin must be >= 0 (accuracy points), got -1.0",
        ),
        (
            {"robust_margin": float("nan")},
            "robust_margin",
            "robust_margin must be >= 0 (accuracy points), got nan",
        ),
        ({"calib_samples": 0}, "calib_samples", "calib_samples must be >= 1, got 0"),
        (
            {"calib_adv_fraction": 1.5},
            "calib_adv_fraction",
            "calib_adv_fraction must lie in [0, 1], got 1.5",
        ),
        ({"transfer_steps": 0}, "transfer_steps", "transfer_steps must be >= 1, got 0"),
        ({"transfer_restarts": 0}, "transfer_restarts", "transfer_restarts must be >= 1, got 0"),
    ],
)
def test_validation_names_the_field(kw, key, message):
    with pytest.raises(FieldError) as info:
        ExportConfig(**kw)
    assert info.value.key == key
    assert str(info.value) == message.format(FORMATS.known())


def test_cli_options_are_the_config_fields_with_their_defaults():
    from robustedge.commands.export import export_cmd
    from robustedge.commands.options import config_from_options

    names = {f.name for f in fields(ExportConfig)}
    opts = {p.name: p.default for p in export_cmd.params if p.name in names}
    assert set(opts) == names
    for name, value in opts.items():
        default = default_of(ExportConfig, name)
        assert value == (",".join(default) if name == "formats" else default), name
    assert config_from_options(ExportConfig, opts) == ExportConfig()
    argv = ["RUN", "--formats", "onnx,tflite-int8", "--no-parity", "--transfer-steps", "3"]
    ctx = export_cmd.make_context("export", argv)
    cfg = config_from_options(ExportConfig, ctx.params)
    assert cfg == ExportConfig(formats=("onnx", "tflite-int8"), parity=False, transfer_steps=3)


# ------------------------------------------------------------------------------ FORMATS


def test_tables_are_views_of_the_registry():
    assert FILES["tflite-int8"] == "model_int8.tflite" and dict(SPARSE_OF) == {
        "tflite-int8-sparse": "tflite-int8"
    }
    assert [f for f in FORMATS if is_quantized(f)] == [
        "onnx-int8",
        "tflite-int8",
        "tflite-int8-sparse",
    ]
    assert of_family("tflite") == ("tflite-float32", "tflite-int8", "tflite-int8-sparse")
    assert board_order() == (
        "tflite-int8-sparse",
        "tflite-int8",
        "tflite-float32",
        "onnx-int8",
        "onnx",
    )
    assert board_choice(["onnx", "onnx-int8"]) == "onnx-int8"
    assert parse_formats("tflite-int8,onnx-int8") == ["onnx", "onnx-int8", "tflite-int8"]
    with pytest.raises(ValueError, match="already registered"):
        register_format(toy("onnx"))
    with pytest.raises(ValueError, match="file model.onnx already belongs to format 'onnx'"):
        register_format(ExportFormat("x", "model.onnx", "onnx", copy_onnx, board_rank=1))


def test_registered_format_is_offered_everywhere_then_gone():
    from click.testing import CliRunner

    from robustedge.commands.export import export_cmd

    with registered(toy()):
        assert FILES["onnx-copy"] == "model_onnx-copy.onnx" and not is_quantized("onnx-copy")
        assert parse_formats("onnx-copy,tflite-int8") == ["onnx", "onnx-copy", "tflite-int8"]
        assert ExportConfig(formats="onnx-copy").made() == ("onnx", "onnx-copy")
        assert "onnx-copy" in CliRunner().invoke(export_cmd, ["--help"]).output
        r = parse_recipe(RECIPE + "export: {formats: [onnx-copy, tflite-int8]}\n")
        assert r.export.made() == ("onnx", "onnx-copy", "tflite-int8")
    assert "onnx-copy" not in FORMATS and "onnx-copy" not in FILES
    with pytest.raises(ValueError, match="unknown export format 'onnx-copy'"):
        ExportConfig(formats="onnx-copy")


def test_bench_format_follows_the_registry_rank():
    text = RECIPE + "export: {formats: [onnx-copy, onnx-int8, tflite-int8]}\n"
    with registered(toy(rank=1)):  # preferred to every built-in format
        assert parse_recipe(text).bench_format() == "onnx-copy"
    with registered(toy(rank=99)):  # preferred to none
        assert parse_recipe(text).bench_format() == "tflite-int8"
    no_tflite = RECIPE + "export: {formats: [onnx-int8]}\n"
    assert parse_recipe(no_tflite).bench_format() == "onnx-int8"


@pytest.mark.export
def test_registered_format_is_built_and_parity_checked(tiny_run, tmp_path):
    """Through the registry alone: export_run builds the toy format with its builder, runs it
    with its family's interpreter and gates it like any format."""
    pytest.importorskip("onnxruntime")
    from robustedge.errors import RobustEdgeError
    from robustedge.export import export_run

    with registered(toy()):
        rep = export_run(tiny_run, ExportConfig(formats="onnx-copy", **FAST), out=tmp_path / "e")
    art = rep.artifacts["onnx-copy"]
    assert list(rep.artifacts) == ["onnx", "onnx-copy"] and art["file"] == "model_onnx-copy.onnx"
    assert rep.path("onnx-copy").read_bytes() == rep.path("onnx").read_bytes()
    same = {k: v for k, v in rep.artifacts["onnx"]["parity"].items() if k != "margins"}
    assert art["parity"]["passed"] is True and same.items() <= art["parity"].items()
    assert art["parity"]["margins"]["max_abs_logit_diff"] == pytest.approx(
        1e-3 * art["parity"]["logit_scale"]  # the descriptor's logit_tol (its default)
    )
    assert art["input"] == rep.artifacts["onnx"]["input"]  # onnxruntime, as for onnx
    rows = {r.get("format"): r for r in rep.ledger["stages"]}
    assert rows["onnx-copy"]["bytes"] == rows["onnx"]["bytes"] > 0
    with registered(toy("onnx-bent", bent_onnx)):
        cfg = ExportConfig(formats="onnx-bent", **FAST)
        with pytest.raises(RobustEdgeError, match="parity gate failed for onnx-bent"):
            export_run(tiny_run, cfg, out=tmp_path / "bent")


def test_recipe_export_section_is_an_export_config(tmp_path):
    from robustedge.recipe.stages import plan

    text = (
        RECIPE
        + "export: {formats: [onnx, tflite-int8], transfer_steps: 10, transfer_restarts: 1}\n"
    )
    r = parse_recipe(text)
    assert r.export == ExportConfig(
        formats=("onnx", "tflite-int8"), transfer_steps=10, transfer_restarts=1, seed=3
    )
    stage = next(s for s in plan(r, tmp_path)[0] if s.kind == "export")
    # the stage hash's input: the keys and values of the recipe's former ExportSpec plus the
    # recipe's seed, so exports cached before ExportConfig stay valid
    assert stage.config == {
        "formats": ["onnx", "tflite-int8"],
        "clean_margin": 1.0,
        "robust_margin": 2.0,
        "calib_samples": 200,
        "calib_adv_fraction": 0.0,
        "parity": True,
        "transfer_steps": 10,
        "transfer_restarts": 1,
        "seed": 3,
    }
    with pytest.raises(RecipeError, match=r"^r.yaml:5: export.seed: unknown key 'seed'"):
        parse_recipe(RECIPE + "export: {seed: 1}\n", "r.yaml")
    bad = RECIPE + "export:\n  formats: [onnx]\n  transfer_steps: 0\n"
    with pytest.raises(RecipeError, match=r"^r.yaml:7: export.transfer_steps: transfer_steps must"):
        parse_recipe(bad, "r.yaml")
