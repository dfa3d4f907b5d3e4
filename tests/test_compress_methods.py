"""Pruning methods register with their own options: CompressConfig holds the shared settings
and the chosen method's options; the flat form (config.yaml, recipe entries, the command line)
routes each key to its owner; a method registered later (a plugin) is a method everywhere."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from robustedge.compress import PRUNERS, CompressConfig, MethodOptions, compress_run, read_masks
from robustedge.compress.common import PruneContext, PruneOutcome
from robustedge.compress.config import register_method
from robustedge.compress.pipeline import same_config
from robustedge.compress.prox import topk_masks
from robustedge.compress.targets import apply_masks
from robustedge.config import FieldError, setting
from robustedge.io import read_yaml
from robustedge.recipe import RecipeError, parse_recipe

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

# main's CompressConfig(teacher="t").to_dict() before the split: every method's keys, 43 in all
OLD_FLAT = {
    "teacher": "t", "method": "prox", "sparsity": 0.9, "structured": False, "scope": "global",
    "adversary": "pgd", "adversary_opts": {}, "eps": 0.1, "steps": 10, "trades_beta": 6.0,
    "kd_alpha": 0.5, "kd_temp": 1.0, "kd_target": "clean", "epochs": 10, "finetune_epochs": 5,
    "batch_size": 16, "lr": 0.001, "optimizer": "adam", "lam0": None, "penalty": "l0",
    "lam_schedule": "ball", "ramp_start": 0.0, "ramp_end": 0.75, "lazy_prox": True,
    "prox_pull": 0.0, "admm_warm": False, "ema_decay": 0.0, "awp_gamma": 0.0, "admm_rho": 0.01,
    "score_lr": 0.01, "gmp_initial_sparsity": 0.0, "gmp_begin_step": 0, "gmp_end_step": None,
    "gmp_frequency": 100, "gmp_power": 3.0, "include_first": False, "include_last": False,
    "model": None, "model_kwargs": {}, "data": None, "data_dir": None, "seed": 0,
    "device": "auto",
}  # fmt: skip

# every option of every built-in method, away from its default
NON_DEFAULT = {
    "prox": dict(
        penalty="reweighted",
        lam_schedule="feedback",
        lam0=0.5,
        ramp_start=0.1,
        ramp_end=0.9,
        lazy_prox=False,
        prox_pull=0.2,
        admm_warm=True,
        admm_rho=0.05,
        layer_budget="taylor",
        budget_epochs=3,
    ),
    "admm": dict(admm_rho=0.05),
    "hydra": dict(score_lr=0.1),
    "harp": dict(score_lr=0.1, rate_lr=0.1, rate_gamma=0.1, rate_alpha=0.2, rate_init=0.2),
    "gmp": dict(
        gmp_initial_sparsity=0.1,
        gmp_begin_step=3,
        gmp_end_step=40,
        gmp_frequency=7,
        gmp_power=2.0,
    ),
    "magnitude": {},
}


def test_the_registry_is_the_list_of_methods():
    assert set(PRUNERS) == set(NON_DEFAULT)
    assert len(OLD_FLAT) == 43
    # shared settings only (and the options object): 43 flat fields before the split
    assert len(fields(CompressConfig)) == 30  # + layer_sparsity (issue 24)
    assert {p.options.__name__ for _, p in PRUNERS.items()} == {
        "ProxOptions",
        "AdmmOptions",
        "HydraOptions",
        "HarpOptions",
        "GmpOptions",
        "MethodOptions",
    }


@pytest.mark.parametrize("method", sorted(NON_DEFAULT))
def test_each_methods_options_round_trip_through_the_flat_form(method):
    keys = NON_DEFAULT[method]
    cfg = CompressConfig.from_keys(teacher="t", method=method, **keys)
    pruner = PRUNERS[method]
    assert type(cfg.options) is pruner.options
    assert {f.name for f in fields(cfg.options)} == set(keys)  # every option is set here
    for k, v in keys.items():
        assert getattr(cfg.options, k) == v
    d = cfg.to_dict()
    assert "options" not in d and {k: d[k] for k in keys} == keys
    assert CompressConfig.from_dict(d) == cfg
    assert CompressConfig.from_dict(yaml.safe_load(yaml.safe_dump(d))) == cfg  # config.yaml
    typed = CompressConfig(teacher="t", method=method, options=pruner.options(**keys))
    assert typed == cfg and typed.to_dict() == d
    # the flat form has the shared settings and this method's options, nothing else
    shared = {f.name for f in fields(CompressConfig)} - {"options"}
    assert set(d) == shared | {f.name for f in fields(pruner.options)}


@pytest.mark.parametrize(
    "method,key,value,owners",
    [
        ("admm", "penalty", "l1", "method prox"),
        ("hydra", "admm_rho", 0.5, "methods admm, prox"),
        ("prox", "score_lr", 0.1, "methods harp, hydra"),
        ("magnitude", "gmp_power", 2.0, "method gmp"),
        ("gmp", "lazy_prox", False, "method prox"),
    ],
)
def test_a_key_of_another_method_is_refused_in_one_line(method, key, value, owners):
    want = f"{key} is an option of {owners}, not {method}"
    for build in (
        lambda: CompressConfig.from_keys(teacher="t", method=method, **{key: value}),
        lambda: CompressConfig.from_dict({**OLD_FLAT, "method": method, key: value}),
    ):
        with pytest.raises(FieldError) as e:
            build()
        assert str(e.value) == want and e.value.key == key


def test_unknown_keys_and_foreign_options_objects_are_refused():
    with pytest.raises(FieldError, match="unknown config keys: bogus"):
        CompressConfig.from_keys(teacher="t", bogus=1)
    prox_opts = CompressConfig(teacher="t").options
    with pytest.raises(FieldError, match="are not method admm's"):
        CompressConfig(teacher="t", method="admm", options=prox_opts)
    with pytest.raises(FieldError, match="unknown pruning method 'obd'") as e:
        CompressConfig.from_keys(teacher="t", method="obd")
    assert e.value.key == "method"


@pytest.mark.parametrize("method", sorted(set(NON_DEFAULT) - {"harp"}))  # harp came later
def test_an_old_flat_config_yaml_loads_for_every_method(tmp_path, method):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**OLD_FLAT, "method": method}))
    old = read_yaml(path)
    cfg = CompressConfig.from_dict(old)
    assert cfg.method == method and cfg.options == PRUNERS[method].options()
    d = cfg.to_dict()
    # today's form: the same values, fewer keys (these came later, at their defaults)
    later = {"layer_sparsity": {}, "layer_budget": "ranked", "budget_epochs": 0}
    assert d == {k: old.get(k, later.get(k)) for k in d}
    assert set(d) - set(old) == set(later) & set(d)
    assert same_config(old, d)  # a checkpoint written before the split still resumes
    assert not same_config({**old, "seed": 1}, d)


def test_capabilities_come_from_the_registry():
    with pytest.raises(
        FieldError, match="implemented for --method harp and magnitude and prox only"
    ):
        CompressConfig(teacher="t", method="admm", structured=True)
    with pytest.raises(FieldError, match="method hydra trains none") as e:
        CompressConfig(teacher="t", method="hydra", awp_gamma=0.01)
    assert e.value.key == "awp_gamma"
    assert CompressConfig(teacher="t", method="hydra").adversary == "trades"
    assert CompressConfig(teacher="t", method="hydra", adversary="pgd").adversary == "pgd"
    assert CompressConfig(teacher="t", method="gmp").kd_alpha == 0.0
    # prox reads ADMM's rho only with its ADMM warm start (benchmark caches ignore it otherwise)
    assert "admm_rho" in CompressConfig(teacher="t").unused_keys()
    warm = CompressConfig.from_keys(teacher="t", admm_warm=True, ramp_start=0.5)
    assert "admm_rho" not in warm.unused_keys() and "gmp_power" in warm.unused_keys()


def test_registration_refuses_options_that_clash():
    def prune(ctx):  # never run
        raise AssertionError

    @dataclass(frozen=True)
    class Shadows(MethodOptions):
        epochs: int = setting(3, help="a shared setting's name")

    @dataclass(frozen=True)
    class OtherRho(MethodOptions):
        admm_rho: float = setting(0.5, help="ADMM's rho with another default")

    @dataclass(frozen=True)
    class NoDefault(MethodOptions):
        toy_x: int = setting(help="an option without a default")

    for options, why in (
        (Shadows, "is a shared setting"),
        (OtherRho, "differs from AdmmOptions's"),
        (NoDefault, "needs a default"),
        (dict, "must subclass MethodOptions"),
    ):
        with pytest.raises(ValueError, match=why):
            register_method("clash", options=options)(prune)
    with pytest.raises(ValueError, match="defaults for adversary, kd_alpha only"):
        register_method("clash", defaults={"epochs": 3})(prune)
    assert "clash" not in PRUNERS


# A plugin: a magnitude-like method with one option of its own, registered from outside.
@dataclass(frozen=True)
class ToyOptions(MethodOptions):
    toy_note: int = setting(0, help="A number the toy method writes to its notes.")

    def __post_init__(self) -> None:
        if self.toy_note < 0:
            raise FieldError("toy_note", f"toy_note must be >= 0, got {self.toy_note}")


def toy_prune(ctx: PruneContext) -> PruneOutcome:
    cfg = ctx.cfg
    scores = {n: p.detach().abs() for n, p in ctx.params.items()}
    masks = topk_masks(scores, cfg.sparsity, cfg.scope.value)
    apply_masks(ctx.params, masks)
    return PruneOutcome(masks, cfg.finetune_epochs, {"toy_note": cfg.options.toy_note})


@pytest.fixture
def toy():
    register_method("toy", options=ToyOptions, defaults={"adversary": "fgsm"})(toy_prune)
    try:
        yield "toy"
    finally:
        PRUNERS.unregister("toy")
    assert "toy" not in PRUNERS


def test_a_method_registered_later_is_a_method_everywhere(toy, tiny_run, tmp_path):
    from robustedge.commands.compress import build_compress_command

    base = dict(teacher=str(tiny_run), sparsity=0.5, epochs=1, finetune_epochs=1, batch_size=128)
    cfg = CompressConfig.from_keys(method="toy", toy_note=7, **base)
    assert cfg.options == ToyOptions(7) and cfg.adversary == "fgsm"  # its own default
    with pytest.raises(FieldError, match="toy_note is an option of method toy, not prox"):
        CompressConfig.from_keys(toy_note=7, **base)
    assert "toy_note" in CompressConfig(teacher="t").unused_keys()

    m = compress_run(cfg, tmp_path / "a", eval_attacks=("fgsm",))
    assert m["method"] == "toy" and m["notes"]["toy_note"] == 7
    masks = read_masks(tmp_path / "a")
    total = sum(v.numel() for v in masks.values())
    assert sum(int((~v).sum()) for v in masks.values()) == round(0.5 * total)
    saved = read_yaml(tmp_path / "a" / "config.yaml")
    assert saved["toy_note"] == 7 and CompressConfig.from_dict(saved).options == ToyOptions(7)

    command = build_compress_command()  # built after the registration
    runner = CliRunner()
    help_text = runner.invoke(command, ["--help"], terminal_width=200).output
    assert "--toy-note" in help_text and "A number the toy method writes" in help_text
    assert "toy" in help_text.split("--method", 1)[1].split("\n")[0]  # --method lists it
    assert "fgsm for toy" in help_text  # --adversary's help names its default
    args = ["--teacher", str(tiny_run), "--method", "toy", "--toy-note", "3", "--sparsity"]
    args += ["0.5", "--epochs", "1", "--finetune-epochs", "1", "--batch-size", "128"]
    r = runner.invoke(command, [*args, "--attack", "fgsm", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert read_yaml(tmp_path / "b" / "config.yaml")["toy_note"] == 3
    r = runner.invoke(command, [*args, "--toy-note", "-1", "--out", str(tmp_path / "c")])
    assert r.exit_code != 0 and "toy_note must be >= 0" in str(r.exception)

    recipe = (
        "name: t\ndata: {name: digits}\nteacher: {load: RUN}\n"
        "compress:\n  - method: toy\n    toy_note: 2\n    sparsity: 0.5\n"
    )
    (entry,) = parse_recipe(recipe).compress
    assert entry.name == "toy" and entry.options["toy_note"] == 2


def test_recipe_entries_validate_through_the_config():
    base = "name: t\ndata: {name: digits}\nteacher: {load: RUN}\ncompress:\n"
    ok = parse_recipe(base + "  - method: gmp\n    gmp_power: 2.0\n    sparsity: 0.5\n")
    assert ok.compress[0].options["gmp_power"] == 2.0 and ok.compress[0].name == "gmp"
    assert parse_recipe(base + "  - sparsity: 0.5\n").compress[0].name == "prox"
    with pytest.raises(RecipeError) as e:
        parse_recipe(base + "  - method: admm\n    penalty: l1\n    sparsity: 0.5\n")
    assert str(e.value).endswith(
        "compress[0].penalty: penalty is an option of method prox, not admm"
    )
    assert ":6:" in str(e.value)  # the penalty line
    with pytest.raises(RecipeError, match="compress\\[0\\].ramp_end"):
        parse_recipe(base + "  - ramp_end: 1.5\n    sparsity: 0.5\n")


def test_tradeoff_ignores_the_keys_the_registry_says_a_method_never_reads():
    sys.path.insert(0, str(BENCH))
    import tradeoff

    admm = CompressConfig.from_keys(teacher="t", method="admm").to_dict()
    skip = tradeoff.unused_keys(admm)
    owners = {f.name for _, p in PRUNERS.items() for f in fields(p.options)}
    assert skip >= owners - {"admm_rho"} and "admm_rho" not in skip
    assert {"kd_temp", "kd_target", "trades_beta", "device"} <= skip
