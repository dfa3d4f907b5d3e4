"""What each board-side option changes (issue 25, part 3: every option has a test that checks
its effect): `robustedge bench` / `bundle` / `deploy` / `device` options and the recipe's
``devices:`` keys, each set to a non-default value and checked in what the board measured, the
bundle holds, or the command did (tests/option_effects.py names these tests)."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustedge.device.board.bundle_format import verify_bundle
from test_device_config import RECIPE  # the one-stage recipe its bench stages extend

SSH_URL = "ssh://pi@board.invalid/~/b"  # never reached: the ProxyCommand below answers first


def python_wrapper(folder: Path) -> tuple:
    """(a python that leaves a mark when it runs, the mark)."""
    mark = folder / "wrapper-ran"
    py = folder / "py-wrapper"
    py.write_text(f'#!/bin/sh\ntouch "{mark}"\nexec "{sys.executable}" "$@"\n')
    py.chmod(0o755)
    return py, mark


def ssh_markers(folder: Path) -> tuple:
    """(an ssh config file, an ``-o`` option): each makes ssh run a ProxyCommand that touches
    its own mark and fails, so a test sees which one reached ssh without any network."""
    cfg = folder / "ssh_config"
    cfg.write_text(f"Host *\n  ProxyCommand sh -c 'touch {folder}/by-config; exit 1'\n")
    opt = f"ProxyCommand=sh -c 'touch {folder}/by-option; exit 1'"
    return cfg, opt


def marks(folder: Path) -> set:
    return {p.name for p in folder.glob("by-*")}


def test_bench_options_change_what_the_board_measures(device_bundle, tmp_path, monkeypatch):
    """Two `robustedge bench` runs of one bundle with every bench option set differently: each
    result records the value and shows what it did (model run, interpreter, Square budget and
    its eps ball, latency loop, where it ran and where the results went)."""
    from robustedge.commands.device import bench_cmd
    from robustedge.hashing import sha256_file

    monkeypatch.chdir(tmp_path)
    py, ran = python_wrapper(tmp_path)
    a_out = tmp_path / "a.json"
    a = CliRunner().invoke(
        bench_cmd,
        ["--bundle", str(device_bundle), "--target", "local", "--out", str(a_out),
         "--format", "onnx", "--backend", "onnxruntime", "--threads", "2", "--runs", "200",
         "--warmup", "3", "--square-queries", "4", "--square-restarts", "2", "--square-n", "5",
         "--square-eps", "0.05", "--seed", "4", "--python", str(py)],
    )  # fmt: skip
    assert a.exit_code == 0, a.output
    assert ran.exists()  # --python: the runner ran under the given interpreter
    ra = json.loads(a_out.read_text())
    b = CliRunner().invoke(
        bench_cmd,
        ["--bundle", str(device_bundle), "--target", "./board", "--format", "tflite-int8",
         "--reference-kernels", "--runs", "0", "--square-queries", "6", "--square-n", "3"],
    )  # fmt: skip
    assert b.exit_code == 0, b.output
    rb = json.loads((tmp_path / "results-board.json").read_text())  # default --out
    assert not (tmp_path / "results-local.json").exists()  # run A went to its --out
    # --target ./board: installed (verified) in that folder and run there
    assert verify_bundle(tmp_path / "board" / device_bundle.name)
    assert (tmp_path / "board" / device_bundle.name / "results.json").is_file()
    # --bundle: the results name the manifest they measured
    want = sha256_file(device_bundle / "manifest.json")
    assert ra["bundle"]["manifest_sha256"] == rb["bundle"]["manifest_sha256"] == want
    # --format / --backend: the model file and interpreter that ran
    assert (ra["format"], ra["backend"]) == ("onnx", "onnxruntime")
    assert ".onnx" in ra["model_file"] and ".tflite" in rb["model_file"]
    assert rb["format"] == "tflite-int8" and rb["backend"] != "onnxruntime"
    # --reference-kernels: TFLite's BUILTIN_REF kernels (default: XNNPACK/builtin)
    assert rb["reference_kernels"] is True and rb["kernels"] == "BUILTIN_REF"
    assert ra["reference_kernels"] is False and "no-graph-opt" not in ra["kernels"]
    # --threads / --runs / --warmup: the timed loop; --runs 0 skips it
    assert ra["threads"] == ra["latency"]["threads"] == 2 and rb["threads"] == 1
    assert (ra["latency"]["runs"], ra["latency"]["warmup"]) == (200, 3)
    assert rb["latency"] is None
    # --square-*: the on-board Square's budget, images, restarts, eps ball and seed
    (sa,), (sb,) = ra["robust"], rb["robust"]
    assert (sa["name"], sa["n_queries"], sa["restarts"], sa["n"]) == ("Square-4x2", 4, 2, 5)
    assert (sb["name"], sb["n_queries"], sb["restarts"], sb["n"]) == ("Square-6", 6, 1, 3)
    assert sa["mean_queries"] <= 4 * 2 and sb["mean_queries"] <= 6
    manifest_eps = verify_bundle(device_bundle)["transfer_attack"]["eps"]
    assert sa["eps"] == 0.05 and sb["eps"] == manifest_eps == 0.1
    # the perturbation fills its own ball: Square's first step moves pixels by +-eps
    assert sa["max_linf"] == pytest.approx(0.05, abs=1e-6)
    assert sb["max_linf"] == pytest.approx(manifest_eps, abs=1e-6)
    assert (sa["seed"], sb["seed"]) == (4, 0)
    # --seed drives Square's random draws: the same seed repeats the attack, another differs
    # (the board runner in this process: 40 images, 6 queries)
    from robustedge.device.board import runner

    def square(seed: int) -> dict:
        out = tmp_path / f"seed{seed}.json"
        argv = ["--bundle", str(device_bundle), "--format", "onnx", "--runs", "0",
                "--square-queries", "6", "--square-n", "40", "--seed", str(seed)]  # fmt: skip
        assert runner.main([*argv, "--out", str(out)]) == 0
        row = json.loads(out.read_text())["robust"][0]
        return {k: v for k, v in row.items() if k not in ("seconds", "cpu_seconds", "seed")}

    four = square(4)
    assert square(4) == four and square(5) != four
    assert ra["worst_case"]["n"] == 5 and rb["worst_case"]["n"] == 3


def test_bench_deploy_and_doctor_pass_the_ssh_settings_to_ssh(device_bundle, tmp_path):
    """--ssh-config is ssh's -F file and --ssh-option its -o option, for `bench`, `deploy` and
    `device doctor`: each makes ssh run its own ProxyCommand (no network needed)."""
    from robustedge.commands.device import bench_cmd, deploy_cmd, doctor_cmd

    cfg, opt = ssh_markers(tmp_path)
    commands = [
        (bench_cmd, ["--bundle", str(device_bundle), "--target", SSH_URL]),
        (deploy_cmd, [str(device_bundle), "--target", SSH_URL]),
        (doctor_cmd, [SSH_URL]),
    ]
    settings = [(["--ssh-config", str(cfg)], "by-config"), (["--ssh-option", opt], "by-option")]
    for cmd, args in commands:
        for flags, mark in settings:
            for p in tmp_path.glob("by-*"):
                p.unlink()
            r = CliRunner().invoke(cmd, [*args, *flags])
            assert r.exit_code != 0, (cmd.name, flags)
            assert "ssh to pi@board.invalid failed" in str(r.exception) + r.output, cmd.name
            assert marks(tmp_path) == {mark}, (cmd.name, flags)


def test_bundle_options_choose_the_formats_the_codec_and_the_output(device_export, tmp_path):
    """`robustedge bundle --formats/--codec/--out`: only the formats asked for, stored with the
    codec asked for (inflating to the exported bytes), in a folder or a .tar as --out says."""
    from robustedge.commands.device import bundle_cmd
    from robustedge.device.host.bundle import unpack

    folder = tmp_path / "gz"
    r = CliRunner().invoke(
        bundle_cmd,
        [str(device_export), "--out", str(folder), "--formats", "onnx", "--codec", "gzip"],
    )
    assert r.exit_code == 0, r.output
    m = verify_bundle(folder)
    assert set(m["formats"]) == {"onnx"}
    art = m["formats"]["onnx"]
    assert art["codec"] == "gzip" and art["file"].endswith(".onnx.gz")
    raw = gzip.decompress((folder / art["file"]).read_bytes())
    exported = json.loads((device_export / "export" / "export.json").read_text())
    assert hashlib.sha256(raw).hexdigest() == exported["artifacts"]["onnx"]["sha256"]
    tar = tmp_path / "b.tar"
    r = CliRunner().invoke(
        bundle_cmd,
        [str(device_export), "--out", str(tar), "--formats", "tflite-int8", "--codec", "none"],
    )
    assert r.exit_code == 0, r.output
    assert tar.is_file() and tarfile.is_tarfile(tar)
    m = verify_bundle(unpack(tar, str(tmp_path / "unpacked")))
    assert set(m["formats"]) == {"tflite-int8"}
    assert "codec" not in m["formats"]["tflite-int8"]  # stored as exported


def test_device_setup_and_vm_commands_act_on_the_arch_asked_for(tmp_path, monkeypatch):
    """`device setup-qemu/setup-vm --arch A` reuse A's finished build and no other arch's;
    `--force` skips the reuse and goes to the build (stopped here: no mmdebstrap on PATH, or
    not root); `device cache-key --arch A` is A's key and folder; `device vm status --arch A`
    reads A's machine."""
    from robustedge.commands.device import device_group
    from robustedge.device.host import qemu

    monkeypatch.setenv("ROBUSTEDGE_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no build tools: a build stops at its first check
    ready = tmp_path / "cache" / "qemu" / "armv7"
    ready.mkdir(parents=True)
    (ready / "READY.json").write_text(json.dumps({"cache_key": qemu.cache_key("armv7")}))
    vm_ready = tmp_path / "cache" / "qemu" / "vm-armv7"
    vm_ready.mkdir()
    info = {"disk_used_mb": 1, "build_s": 2, "boot_s": 3}
    (vm_ready / "READY.json").write_text(json.dumps(info))
    stopped = ("needs root", "not found")

    def run(*args: str):
        return CliRunner().invoke(device_group, list(args))

    r = run("setup-qemu", "--arch", "armv7")
    assert r.exit_code == 0 and r.output.strip() == f"qemu armv7 userland: {ready / 'rootfs'}"
    for args in (["--arch", "aarch64"], ["--arch", "armv7", "--force"]):
        r = run("setup-qemu", *args)
        assert r.exit_code != 0 and any(s in str(r.exception) for s in stopped), (args, r.output)
    r = run("setup-vm", "--arch", "armv7")
    assert r.exit_code == 0 and r.output.startswith(f"armv7 VM image: {vm_ready} (disk 1 MiB")
    for args in (["--arch", "aarch64"], ["--arch", "armv7", "--force"]):
        r = run("setup-vm", *args)
        assert r.exit_code != 0 and any(s in str(r.exception) for s in stopped), (args, r.output)
    assert json.loads((ready / "READY.json").read_text())["cache_key"]  # left as it was
    assert (vm_ready / "READY.json").is_file()
    r = run("cache-key", "--arch", "armv7")  # the key and the folder of the arch asked for
    assert r.output.strip() == qemu.cache_key("armv7") != qemu.cache_key("aarch64")
    assert r.output.startswith("robustedge-qemu-armv7-")
    r = run("cache-key", "--arch", "armv7", "--path")
    assert r.exit_code == 0 and r.output.strip() == str(ready)
    r = run("vm", "status", "--arch", "armv7")
    assert r.exit_code == 0 and r.output == "vm-armv7: stopped\n", r.output
    r = run("vm", "status", "--arch", "aarch64")  # no aarch64 image here: that machine is named
    assert "no aarch64 VM image: run `robustedge device setup-vm --arch aarch64`" in str(
        r.exception
    )


def bench_stages(text: str, out: Path, device_export: Path) -> dict:
    """The recipe's bench stages by id, with ``device_export`` as the teacher's run folder."""
    import shutil

    from robustedge.recipe import parse_recipe
    from robustedge.recipe.stages import plan

    stages = {s.id: s for s in plan(parse_recipe(text, "r.yaml"), out)[0] if s.kind == "bench"}
    shutil.copytree(device_export, out / "teacher")
    return stages


def test_recipe_devices_and_target_keys_reach_the_board(device_export, tmp_path, monkeypatch):
    """Every ``devices:`` bench key and a target's own keys (python, a folder target, its
    Square overrides) set to non-defaults: the bench stage's results show each one."""
    monkeypatch.chdir(tmp_path)
    py, ran = python_wrapper(tmp_path)
    devices = (
        "devices:\n"
        f"  targets: [{{target: ./card, python: {py}, square_queries: 4, square_n: 3}}]\n"
        "  format: onnx\n  backend: onnxruntime\n  threads: 2\n  runs: 200\n  warmup: 2\n"
        "  square_queries: 9\n  square_restarts: 2\n  square_n: 40\n  square_eps: 0.05\n"
        "  reference_kernels: true\n  refuse_throttled: false\n  seed: 5\n"
    )
    out = tmp_path / "out"
    (stage,) = bench_stages(RECIPE + devices, out, device_export).values()
    assert stage.id == "device-teacher-card"
    stage.execute()
    r = json.loads((out / "teacher" / "device" / "card" / "results.json").read_text())
    assert ran.exists()  # python: the target's interpreter ran the bundle
    assert verify_bundle(tmp_path / "card" / "bundle")  # target: installed in that folder
    assert (r["format"], r["backend"], r["threads"]) == ("onnx", "onnxruntime", 2)
    assert r["reference_kernels"] is True and r["kernels"].endswith("/no-graph-opt")
    assert (r["latency"]["runs"], r["latency"]["warmup"], r["latency"]["threads"]) == (200, 2, 2)
    (sq,) = r["robust"]  # the target's square_queries / square_n win over the section's
    assert (sq["n_queries"], sq["n"], sq["restarts"], sq["seed"]) == (4, 3, 2, 5)
    assert sq["eps"] == 0.05 and sq["max_linf"] == pytest.approx(0.05, abs=1e-6)
    assert r["emulated"] is False  # the local board, not emulated


def test_recipe_ssh_target_keys_reach_ssh(device_export, tmp_path):
    """A recipe ssh target's ``ssh_config`` is ssh's -F file and ``ssh_options`` its -o
    options: each makes ssh run its own ProxyCommand when the bench stage runs."""
    from robustedge.errors import RobustEdgeError

    cfg, opt = ssh_markers(tmp_path)
    devices = (
        "devices:\n  targets:\n"
        f"    - {{target: 'ssh://pi@a.invalid/~/b', ssh_config: {cfg}}}\n"
        f"    - {{target: 'ssh://pi@b.invalid/~/b', ssh_options: [\"{opt}\"]}}\n"
        "  runs: 0\n"
    )
    stages = bench_stages(RECIPE + devices, tmp_path / "out", device_export)
    for host, mark in (("a", "by-config"), ("b", "by-option")):
        for p in tmp_path.glob("by-*"):
            p.unlink()
        (stage,) = [s for sid, s in stages.items() if f"pi_{host}_invalid" in sid]
        with pytest.raises(RobustEdgeError, match=f"ssh to pi@{host}.invalid failed"):
            stage.execute()
        assert marks(tmp_path) == {mark}
