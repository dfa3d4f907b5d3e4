"""One definition of each bench setting (BenchConfig: runner, CLI, recipe), of what a bundle
ships (the board package only), and of each target name (the TARGETS registry: formats,
emulation, help, recipe checks)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import robustedge
from robustedge.device.board.bundle_format import verify_bundle
from robustedge.device.board.config import BenchConfig
from robustedge.device.host.targets import (
    TARGETS,
    LocalTarget,
    SSHTarget,
    is_emulated,
    make_target,
    target_class,
    target_help,
)
from robustedge.errors import RobustEdgeError
from test_device import GUARD, bundle, run_runner  # noqa: F401

FIELDS = [f.name for f in dataclasses.fields(BenchConfig)]
# a value other than the default for every field
OTHER = {
    "format": "onnx",
    "backend": "onnxruntime",
    "threads": 3,
    "runs": 0,
    "warmup": 4,
    "square_queries": 7,
    "square_restarts": 2,
    "square_n": 9,
    "square_eps": 0.05,
    "reference_kernels": True,
    "refuse_throttled": True,
    "emulated": True,
    "seed": 11,
}
RECIPE = """\
name: t
data: {name: digits}
teacher:
  train: {model: tiny, epochs: 1, adversary: none, eps: 0.0}
export: {formats: [onnx, tflite-int8]}
"""


# ------------------------------------------------------------------------ BenchConfig


def test_bench_config_round_trips_every_field_through_argv():
    assert sorted(OTHER) == sorted(FIELDS)  # a new field needs a value here
    default = BenchConfig()
    assert BenchConfig.from_argv(default.to_argv()) == default == BenchConfig.from_argv([])
    for name, value in OTHER.items():
        assert getattr(default, name) != value, name
        one = BenchConfig(**{name: value})
        assert BenchConfig.from_argv(one.to_argv()) == one, name
    every = BenchConfig(**OTHER)
    assert BenchConfig.from_argv(every.to_argv()) == every
    argv = default.to_argv()
    assert argv[argv.index("--square-n") + 1] == "all"  # None travels as 'all'
    assert "--square-eps" not in argv and "--emulated" not in argv  # unset: left out
    with pytest.raises(ValueError, match="not a bench setting: --out x"):
        BenchConfig.from_argv(["--out", "x"])
    with pytest.raises(ValueError, match="runs must be >= 200"):
        BenchConfig.from_argv(["--runs", "5"])
    with pytest.raises(ValueError, match="square_eps must lie in"):
        BenchConfig(square_eps=0.0)


def test_runner_offers_exactly_the_bench_settings_and_its_own_three():
    from robustedge.device.board.runner import parser

    p = parser()
    dests = {a.dest for a in p._actions} - {"help"}
    assert dests == set(FIELDS) | {"bundle", "verify_only", "out"}
    ns = p.parse_args([])
    defaults = BenchConfig()
    assert {n: getattr(ns, n) for n in FIELDS} == {n: getattr(defaults, n) for n in FIELDS}


def test_bench_command_options_are_the_bench_settings():
    from robustedge.commands.device import bench_cmd

    params = {p.name: p for p in bench_cmd.params}
    own = {"bundle", "target", "out", "ssh_config", "ssh_option", "python"}
    assert set(params) == (set(FIELDS) - {"emulated"}) | own  # emulated: the target's say
    default = BenchConfig()
    for name in set(FIELDS) - {"emulated", "square_n"}:
        assert params[name].default == getattr(default, name), name
    assert params["square_n"].default == "all" and default.square_n is None


def test_bench_command_sends_the_config(monkeypatch, tmp_path, bundle):  # noqa: F811
    """`robustedge bench` builds one BenchConfig from its options and hands it to the target."""
    from click.testing import CliRunner

    from robustedge.commands import device as cmd

    seen = []

    class Fake:
        def bench(self, b, cfg):
            seen.append(cfg)
            raise RobustEdgeError("stop here")

    monkeypatch.setattr(cmd, "_target", lambda *a: Fake())
    args = ["--bundle", str(bundle), "--runs", "0", "--square-n", "7", "--warmup", "3"]
    res = CliRunner().invoke(cmd.bench_cmd, [*args, "--square-eps", "0.05", "--seed", "2"])
    assert isinstance(res.exception, RobustEdgeError)
    assert seen == [BenchConfig(runs=0, square_n=7, warmup=3, square_eps=0.05, seed=2)]


def test_recipe_devices_take_every_bench_setting_but_emulated():
    from robustedge.recipe import RecipeError, parse_recipe
    from robustedge.recipe.stages import bench_config

    text = RECIPE + (
        "devices:\n  targets: [local, {target: ./sd, square_n: 3}]\n  warmup: 50\n"
        "  square_restarts: 2\n  seed: 3\n  square_eps: 0.05\n  square_n: 40\n"
        "  refuse_throttled: true\n  threads: 2\n  reference_kernels: true\n"
    )
    r = parse_recipe(text, "r.yaml")
    local, sd = r.devices.targets
    want = BenchConfig(
        format="tflite-int8", warmup=50, square_restarts=2, seed=3, square_eps=0.05, square_n=40,
        refuse_throttled=True, threads=2, reference_kernels=True,
    )  # fmt: skip
    assert bench_config(r, local) == want
    assert bench_config(r, sd) == dataclasses.replace(want, square_n=3)
    with pytest.raises(RecipeError, match=r"r.yaml:6: devices.emulated: emulated is set by"):
        parse_recipe(RECIPE + "devices: {targets: [local], emulated: true}\n", "r.yaml")
    with pytest.raises(RecipeError, match=r"devices.warmup: warmup must be >= 0"):
        parse_recipe(RECIPE + "devices: {targets: [local], warmup: -1}\n", "r.yaml")
    with pytest.raises(RecipeError, match=r"devices.targets\[0\].square_n: square_n must be"):
        parse_recipe(RECIPE + "devices: {targets: [{target: local, square_n: 0}]}\n", "r.yaml")


# ------------------------------------------------------------------------ the bundle


def test_bundle_ships_the_board_package_and_no_host_module(bundle, tmp_path):  # noqa: F811
    from robustedge.device.host.bundle import LIB_FILES

    pkg = Path(robustedge.__file__).parent
    board = sorted(p.name for p in (pkg / "device" / "board").glob("*.py"))
    host = sorted(p.name for p in (pkg / "device" / "host").glob("*.py") if p.name != "__init__.py")
    assert "runner.py" in board and "config.py" in board and "targets.py" in host
    code = sorted(f for f in verify_bundle(bundle)["files"] if f.startswith("lib/"))
    assert code == sorted(
        [
            "lib/robustedge/__init__.py",
            "lib/robustedge/device/__init__.py",
            *(f"lib/robustedge/{n}" for n in LIB_FILES),
            *(f"lib/robustedge/device/board/{n}" for n in board),
        ]
    )
    assert LIB_FILES == (
        "errors.py",
        "registry.py",
        "hashing.py",
        "jsonsafe.py",
        "config.py",
        "codec.py",
    )
    on_disk = [p.name for p in bundle.rglob("*.py")]
    assert not set(host) & set(on_disk) and not (bundle / "lib/robustedge/device/host").exists()
    # the runner measures with no host module importable at all
    guard = GUARD + "sys.modules['robustedge.device.host'] = None\n"
    out = tmp_path / "r.json"
    proc = run_runner(
        bundle, "--runs", "0", "--square-queries", "0", "--out", str(out), guard=guard
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["accuracy"]["clean"] > 0


def test_bundle_records_square_p_init_from_the_core(bundle):  # noqa: F811
    from robustedge.attacks.square_core import P_INIT

    assert verify_bundle(bundle)["square"]["p_init"] == P_INIT


def test_square_eps_comes_from_the_manifest_or_the_transfer_attack():
    from robustedge.device.board.bundle_format import BundleError
    from robustedge.device.board.onboard import square_eps

    assert square_eps({"square": {"eps": 0.05}, "transfer_attack": {"eps": 0.2}}) == 0.05
    assert (
        square_eps({"square": {"file": "square_core.py"}, "transfer_attack": {"eps": 0.2}}) == 0.2
    )
    for bad in ({}, {"square": {}, "transfer_attack": {}}):
        with pytest.raises(BundleError, match="records no Square eps"):
            square_eps(bad)
    with pytest.raises(BundleError, match="square.eps is not a number"):
        square_eps({"square": {"eps": "lots"}})


# ------------------------------------------------------------------------ targets


def test_target_registry_formats_and_emulation():
    from robustedge.export.formats import FORMATS

    tflite = {"tflite-float32", "tflite-int8", "tflite-int8-sparse"}
    every = tflite | {"onnx", "onnx-int8"}
    assert {n: (c.emulated, set(c.formats())) for n, c in TARGETS.items()} == {
        "local": (False, every),
        "ssh": (False, every),
        "qemu-aarch64": (True, every),
        "qemu-armv7": (True, tflite),
        "vm-aarch64": (True, every),
        "vm-armv7": (True, tflite),
        "tflm": (True, {"tflite-int8", "tflite-int8-sparse"}),  # int8 only (docs/mcu.md)
    }
    assert every == set(FORMATS)  # the device's format names are export's


def test_emulated_formats_follow_the_userland_wheels():
    """A target runs .onnx exactly when its userland carries onnxruntime (qemu.ARCHES; the VM
    images install the same wheels)."""
    from robustedge.device.host import qemu, vm_image

    for name, cls in TARGETS.items():
        if not cls.emulated or not hasattr(cls, "arch"):  # tflm: no userland (docs/mcu.md)
            continue
        spec = vm_image.VM_ARCHES[cls.arch].wheel_spec if name.startswith("vm-") else cls.arch
        ort = any(w.startswith("onnxruntime") for w in qemu.ARCHES[spec].wheels)
        assert ("onnx" in cls.formats()) == ort, name


@pytest.mark.parametrize(
    "text,name",
    [
        ("local", "local"),
        ("/mnt/sd", "local"),
        ("./board", "local"),
        ("../b", "local"),
        ("file:///mnt/sd", "local"),
        ("ssh://pi@10.0.0.2:2222/~/b", "ssh"),
        ("qemu-aarch64", "qemu-aarch64"),
        ("vm-armv7", "vm-armv7"),
    ],
)
def test_target_class_resolves_without_building(text, name):
    assert target_class(text) is TARGETS[name]
    assert is_emulated(text) is TARGETS[name].emulated


@pytest.mark.parametrize(
    "text,msg",
    [
        ("pi", "unknown target 'pi' \\(known: local \\| a local folder"),
        ("ssh", "bad ssh target 'ssh'"),
        ("ssh://-oProxyCommand=sh@h", "unsafe user or host"),
        ("ftp://h", "unknown target 'ftp://h'"),
    ],
)
def test_target_class_refusals(text, msg):
    with pytest.raises(RobustEdgeError, match=msg):
        target_class(text)


def test_target_help_and_recipe_checks_read_the_registry():
    from robustedge.recipe import RecipeError, parse_recipe

    for name in TARGETS:
        assert name in target_help()
    assert "ssh://user@host[:port][/path]" in target_help()
    bad = RECIPE.replace("[onnx, tflite-int8]", "[onnx]") + "devices: {targets: [qemu-armv7]}\n"
    with pytest.raises(RecipeError, match="qemu-armv7 cannot run onnx \\(it runs tflite-"):
        parse_recipe(bad, "r.yaml")
    # the same check, on what the registry says: a board that runs onnx only
    toy = type("OnnxOnly", (LocalTarget,), {"name": "onnx-only", "families": ("onnx",)})
    TARGETS.register("onnx-only", toy)
    try:
        with pytest.raises(
            RecipeError, match="onnx-only cannot run tflite-int8 \\(it runs onnx-int8, onnx\\)"
        ):
            parse_recipe(RECIPE + "devices: {targets: [onnx-only]}\n", "r.yaml")
        r = parse_recipe(RECIPE + "devices: {targets: [onnx-only], format: onnx}\n", "r.yaml")
        assert r.bench_format() == "onnx"
    finally:
        TARGETS.unregister("onnx-only")
    with pytest.raises(RecipeError, match="ssh settings given for a non-ssh target"):
        parse_recipe(RECIPE + "devices: {targets: [{target: vm-aarch64, ssh_options: [a]}]}\n")
    assert SSHTarget.ssh_settings and not TARGETS["vm-aarch64"].ssh_settings


@pytest.fixture
def toy_local():
    """A board registered by a plugin: the local board under another name."""

    class ToyLocal(LocalTarget):
        name = "toy-local"
        families = ("tflite",)

    TARGETS.register("toy-local", ToyLocal)
    yield ToyLocal
    TARGETS.unregister("toy-local")


def test_a_registered_target_is_known_everywhere(toy_local, device_export, tmp_path):  # noqa: F811
    """Registering a Target class is all it takes: the recipe accepts it, checks its formats,
    plans a bench stage for it and benches a bundle on it; help texts list it."""
    from click.testing import CliRunner

    from robustedge.commands.device import bench_cmd
    from robustedge.recipe import RecipeError, parse_recipe
    from robustedge.recipe.stages import plan

    assert "toy-local" in target_help() and not is_emulated("toy-local")
    assert "toy-local" in CliRunner().invoke(bench_cmd, ["--help"]).output
    assert target_class("/mnt/sd") is LocalTarget  # paths stay the local board's
    devices = "devices:\n  targets: [toy-local]\n  runs: 0\n  square_queries: 5\n  square_n: 4\n"
    with pytest.raises(RecipeError, match="toy-local cannot run onnx"):
        parse_recipe(RECIPE + devices + "  format: onnx\n", "r.yaml")
    recipe = parse_recipe(RECIPE + devices, "r.yaml")
    out = tmp_path / "out"
    stages, _, notes = plan(recipe, out)
    (stage,) = [s for s in stages if s.kind == "bench"]
    assert stage.id == "device-teacher-toy-local" and not notes
    want = BenchConfig(format="tflite-int8", runs=0, square_queries=5, square_n=4)
    assert {k: stage.config[k] for k in FIELDS} == want.to_dict()
    shutil.copytree(device_export, out / "teacher")
    stage.execute()
    r = json.loads((out / "teacher" / "device" / "toy-local" / "results.json").read_text())
    assert r["target"] == "toy-local" and r["format"] == "tflite-int8" and r["emulated"] is False
    assert r["robust"][0]["n"] == 4 and r["robust"][0]["n_queries"] == 5
    assert r["latency"] is None  # runs: 0
    assert isinstance(make_target("toy-local"), toy_local)
