"""Exact-value unit tests of the board runner, to kill mutmut's mutants (issue 16; the rule is in
tests/test_exact_attacks.py)."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import pytest

from test_exact_bundle import manifest_of

# ------------------------------------------------------------------------ device/runner


def test_runner_parser_defaults_and_runs():
    from robustedge.device.board.config import BenchConfig
    from robustedge.device.board.runner import MIN_RUNS, parser

    a = parser().parse_args([])
    assert (a.bundle, a.format, a.backend, a.threads, a.runs, a.warmup) == (
        None,
        None,
        None,
        1,
        200,
        20,
    )
    assert (a.square_queries, a.square_n, a.square_eps, a.seed, a.out) == (
        1000,
        None,
        None,
        0,
        "results.json",
    )
    assert a.square_restarts == 1
    assert not (a.reference_kernels or a.refuse_throttled or a.emulated or a.verify_only)
    assert MIN_RUNS == 200
    assert BenchConfig.from_argv(["--runs", "0"]).runs == 0
    assert BenchConfig.from_argv(["--runs", "200"]).runs == 200
    for bad in ("199", "1"):
        with pytest.raises(ValueError, match=f"runs must be >= 200 .*got {bad}$"):
            BenchConfig.from_argv(["--runs", bad])
    for text, n in [("all", None), (" All ", None), ("ALL", None), ("1", 1), ("12", 12)]:
        assert parser().parse_args(["--square-n", text]).square_n == n  # 1 is the smallest
    b = parser().parse_args(
        ["--format", "onnx", "--threads", "2", "--square-eps", "0.05", "--reference-kernels"]
    )
    assert (b.format, b.threads, b.square_eps, b.reference_kernels) == ("onnx", 2, 0.05, True)


def test_runner_options_become_a_bench_config():
    from robustedge.device.board.config import BenchConfig
    from robustedge.device.board.runner import parser

    args = parser().parse_args(
        "--format onnx --threads 3 --runs 0 --warmup 4 --square-queries 7 --square-n 9 "
        "--square-eps 0.2 --reference-kernels --backend onnxruntime --seed 5 "
        "--refuse-throttled --square-restarts 3 --emulated --out x.json".split()
    )
    o = BenchConfig.from_namespace(args)
    assert (o.format, o.threads, o.runs, o.warmup, o.square_queries, o.square_n) == (
        "onnx",
        3,
        0,
        4,
        7,
        9,
    )
    assert (o.square_eps, o.reference_kernels, o.backend, o.emulated, o.seed) == (
        0.2,
        True,
        "onnxruntime",
        True,
        5,
    )
    assert o.refuse_throttled is True and o.square_restarts == 3
    assert BenchConfig.from_namespace(parser().parse_args([])) == BenchConfig()


def test_runner_check_dependencies(bundle):
    from robustedge.device.board.runner import MissingDependency, check_dependencies
    from robustedge.errors import RobustEdgeError

    m = manifest_of(bundle)
    check_dependencies(m, None, None)  # litert or tflite-runtime is installed here
    check_dependencies({"formats": {}}, None, None)
    check_dependencies(m, "nope", None)  # an unknown format is the measurement's business
    with pytest.raises(RobustEdgeError, match="backend 'onnxruntime' reads .onnx files"):
        check_dependencies(m, None, "onnxruntime")
    onnx = {"formats": {"onnx": {"file": "models/m.onnx"}}, "default_format": "onnx"}
    check_dependencies(onnx, None, None)
    try:
        check_dependencies(onnx, None, "onnxruntime")
    except MissingDependency:  # pragma: no cover - onnxruntime is in the dev environment
        pytest.fail("onnxruntime is installed")


def test_runner_missing_numpy_and_interpreter(bundle, monkeypatch):
    import importlib.util

    from robustedge.device.board import runner

    real = importlib.util.find_spec

    def hide(names):
        def find(name, *a, **k):
            if name in names:
                return None
            return real(name, *a, **k)

        return find

    monkeypatch.setattr(importlib.util, "find_spec", hide({"numpy"}))
    with pytest.raises(runner.MissingDependency, match="this board has no numpy: pip install"):
        runner.check_dependencies(manifest_of(bundle), None, None)

    def broken(name, *a, **k):
        raise ValueError("bad spec")

    monkeypatch.setattr(importlib.util, "find_spec", broken)
    with pytest.raises(runner.MissingDependency, match="no numpy"):
        runner.check_dependencies(manifest_of(bundle), None, None)
    monkeypatch.setattr(
        importlib.util, "find_spec", hide({"ai_edge_litert", "tflite_runtime", "tensorflow"})
    )
    with pytest.raises(runner.MissingDependency, match="pip install"):
        runner.check_dependencies(manifest_of(bundle), None, None)
    assert runner.main(["--bundle", str(bundle), "--out", "/dev/null/x"]) == runner.EXIT_DEPS


def test_runner_write_results_atomic(tmp_path):
    from robustedge.device.board.runner import write_results

    out = tmp_path / "sub" / "r.json"
    write_results(out, {"a": 1})
    assert out.read_text() == '{\n  "a": 1\n}\n'
    with pytest.raises(TypeError):
        write_results(out, {"bad": object()})
    assert json.loads(out.read_text()) == {"a": 1}  # the old file survives a failed write
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]


def test_runner_main_exit_codes(bundle, tmp_path, capsys):
    from robustedge.device.board import runner

    assert (runner.EXIT_OTHER, runner.EXIT_BUNDLE, runner.EXIT_DEPS) == (2, 3, 4)
    assert (runner.EXIT_WRITE, runner.EXIT_THROTTLED) == (5, 6)
    n = len(manifest_of(bundle)["files"])
    assert runner.main(["--verify-only"], default_bundle=str(bundle)) == 0
    assert capsys.readouterr().out.startswith(f"bundle ok: {n} files verified")
    assert runner.main(["--verify-only", "--bundle", str(bundle)], default_bundle="/nope") == 0
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(bundle)
    try:
        assert runner.main(["--verify-only"]) == 0
    finally:
        os.chdir(cwd)
    capsys.readouterr()
    assert runner.main(["--verify-only", "--bundle", str(tmp_path / "none")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: refusing bundle: not a bundle:") and err.count("\n") == 1
    out = tmp_path / "r.json"
    # the model bytes are not a model: the measurement fails in one line, nothing is written
    code = runner.main(["--bundle", str(bundle), "--runs", "0", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and not out.exists()
    code = runner.main(["--bundle", str(bundle), "--threads", "0", "--out", str(out)])
    assert code == 2 and "threads must be >= 1, got 0" in capsys.readouterr().err
    code = runner.main(["--bundle", str(bundle), "--format", "onnx", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and "format 'onnx' is not in this bundle (has: tflite-int8)" in err


@pytest.fixture
def onnx_bundle(tmp_path) -> Path:
    """A bundle holding a real ONNX model (flatten + dense, weights known) and eval sets."""
    from robustedge.device.host.bundle import build_bundle

    return build_bundle(onnx_run(tmp_path), tmp_path / "bundle")


def onnx_run(tmp_path: Path, tflite: bool = False) -> Path:
    """A run folder whose export holds the ONNX model (and, with ``tflite``, an opaque int8
    .tflite artifact too, which then is the bundle's default format)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from robustedge.hashing import sha256_file

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 10)).astype(np.float32)
    x = rng.random((20, 1, 8, 8), dtype=np.float32)
    y = (x.reshape(20, -1) @ w).argmax(1).astype(np.int64)
    y[:5] = (y[:5] + 1) % 10  # 15 of 20 right
    ex = tmp_path / "run" / "export"
    ex.mkdir(parents=True)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(ex / "m.onnx"))
    np.savez(ex / "eval_clean.npz", x=x, y=y)
    np.savez(ex / "eval_transfer.npz", x=x[::-1].copy(), y=y[::-1].copy())
    export = {
        "run": "r",
        "data": "digits",
        "num_classes": 10,
        "input_shape_nchw": [1, 8, 8],
        "artifacts": {
            "onnx": {
                "file": "m.onnx",
                "sha256": sha256_file(ex / "m.onnx"),
                "input": {"name": "x", "layout": "NCHW", "dtype": "float32"},
                "output": {"dtype": "float32"},
                "parity": {"clean_acc": 0.75, "transfer_acc": 0.75},
            }
        },
        "eval_sets": {"clean": "eval_clean.npz", "transfer": "eval_transfer.npz"},
        "eval_sha256": {
            "clean": sha256_file(ex / "eval_clean.npz"),
            "transfer": sha256_file(ex / "eval_transfer.npz"),
        },
        "transfer_attack": {"attack": "pgd", "eps": 0.1},
    }
    if tflite:
        (ex / "m_int8.tflite").write_bytes(rng.bytes(4096))
        export["artifacts"]["tflite-int8"] = {
            "file": "m_int8.tflite",
            "sha256": sha256_file(ex / "m_int8.tflite"),
            "input": {"layout": "NHWC", "dtype": "int8", "scale": 1 / 255, "zero_point": -128},
            "output": {"dtype": "int8", "scale": 0.1, "zero_point": 0},
        }
    (ex / "export.json").write_text(json.dumps(export))
    return tmp_path / "run"


def test_runner_main_measures_and_writes(onnx_bundle, tmp_path, capsys):
    from robustedge.device.board import runner

    out = tmp_path / "res" / "r.json"
    args = ["--bundle", str(onnx_bundle), "--runs", "0", "--square-queries", "0"]
    assert runner.main([*args, "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    r = json.loads(out.read_text())
    assert r["accuracy"]["clean"] == 0.75 and r["accuracy"]["transfer"] == 0.75
    assert r["backend"] == "onnxruntime" and r["emulated"] is False
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]
    assert runner.main([*args, "--emulated", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["emulated"] is True
    capsys.readouterr()
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert runner.main([*args, "--out", str(blocked / "r.json")]) == runner.EXIT_WRITE
    err = capsys.readouterr().err
    assert err == f"error: cannot write {blocked / 'r.json'}: File exists\n"  # strerror only
    assert runner.main([*args, "--backend", "litert", "--out", str(out)]) == runner.EXIT_OTHER
    assert "backend 'litert' reads .tflite files" in capsys.readouterr().err
    assert runner.main([*args, "--format", "onnx", "--out", str(out)]) == 0
    capsys.readouterr()
    assert runner.main(["--bundle", str(onnx_bundle), "--verify-only"]) == 0
    m = manifest_of(onnx_bundle)
    packed = sum(a.get("codec") is not None for a in m["formats"].values())
    extra = f", {packed} compressed model(s) inflated and verified" if packed else ""
    assert capsys.readouterr().out == f"bundle ok: {len(m['files'])} files verified{extra}\n"


def test_runner_default_format_choice(onnx_bundle):
    from robustedge.device.board.runner import check_dependencies
    from robustedge.errors import RobustEdgeError

    m = manifest_of(onnx_bundle)
    tfl = {"file": "models/m.tflite"}
    # default_format wins over the alphabetical first, which wins when there is none
    both = {"formats": {**m["formats"], "a-tflite": tfl}, "default_format": "onnx"}
    with pytest.raises(RobustEdgeError, match="reads .tflite files, not m.onnx"):
        check_dependencies(both, None, "litert")
    check_dependencies(both, None, "onnxruntime")
    first = {"formats": {**m["formats"], "a-tflite": tfl}}
    check_dependencies(first, None, "litert")  # a-tflite sorts before onnx
    with pytest.raises(RobustEdgeError, match="reads .onnx files, not m.tflite"):
        check_dependencies(first, None, "onnxruntime")
    check_dependencies(first, "onnx", "onnxruntime")


# ------------------------------------------------------------ the board user's promises


def test_runner_help_documents_every_option_and_its_default(capsys):
    """`python3 run_bundle.py --help` on the board: every option says what it does, and every
    option that takes a value states its default, which is the value the runner really uses."""
    from robustedge.device.board.runner import main, parser

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: run_bundle.py [-h] ")
    p = parser()
    assert p.description and p.description in out
    # the help's entries: "  --opt METAVAR  text" plus its indented continuation lines
    entries, current = {}, None
    for line in out.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = [line.strip()]
        elif current and line.startswith("   "):
            entries[current].append(line.strip())
    defaults = vars(p.parse_args([]))
    opts = [a for a in p._actions if a.option_strings != ["-h", "--help"]]
    assert sorted(entries) == sorted(["-h", *(a.option_strings[0] for a in opts)])
    for a in opts:
        opt = a.option_strings[0]
        text = " ".join(entries[opt])
        head = opt if a.nargs == 0 else f"{opt} {a.metavar or a.dest.upper()}"
        assert text.startswith(head), (opt, text)
        words = text[len(head) :].strip()  # what the help says about the option
        assert len(words) > 10, (opt, text)
        if a.nargs == 0:  # a flag: off unless given
            assert defaults[a.dest] is False, opt
        elif defaults[a.dest] is None:  # the runner fills it in: the help says how
            assert "(default: " in words, (opt, text)
        else:
            assert f"(default: {defaults[a.dest]}" in words, (opt, text)


def test_runner_runs_and_square_n_refused_in_one_line(capsys):
    """Out of range: BenchConfig's one-line refusal, exit 2, before the bundle is read; not a
    number at all: argparse's usage error, exit 2."""
    from robustedge.device.board.runner import main

    for argv, msg in [
        (["--runs", "199"], "runs must be >= 200 (or 0 to skip timing), got 199"),
        (["--runs", "-1"], "runs must be >= 200 (or 0 to skip timing), got -1"),
        (["--square-n", "0"], "square_n must be >= 1 (or all images), got 0"),
    ]:
        assert main([*argv, "--bundle", "/nonexistent"]) == 2
        assert capsys.readouterr().err == f"error: {msg}\n"
    for argv, msg in [
        (["--runs", "2e3"], "argument --runs: invalid int value: '2e3'"),
        (["--square-n", "x"], "argument --square-n: need a number of images or 'all', got 'x'"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: run_bundle.py ")
        assert err.splitlines()[-1] == f"run_bundle.py: error: {msg}"


def test_runner_missing_numpy_in_one_line(bundle, tmp_path, monkeypatch, capsys):
    """A board without numpy: the import system cannot find it (``sys.modules[name] = None``
    is Python's own way of making a module unimportable)."""
    import sys

    from robustedge.device.board import runner

    out = tmp_path / "r.json"
    monkeypatch.setitem(sys.modules, "numpy", None)
    assert runner.main(["--bundle", str(bundle), "--out", str(out)]) == 4
    assert capsys.readouterr().err == "error: this board has no numpy: pip install numpy\n"
    assert not out.exists()


def test_runner_checks_the_requested_format_and_backend_first(tmp_path, monkeypatch, capsys):
    """The interpreter missing for the format or backend asked for is exit 4 naming the pip
    package, before anything is measured (the bundle's default format, .tflite, has one)."""
    import sys

    from robustedge.device.board import runner
    from robustedge.device.host.bundle import build_bundle

    b = build_bundle(onnx_run(tmp_path, tflite=True), tmp_path / "bundle")
    assert manifest_of(b)["default_format"] == "tflite-int8"
    out = tmp_path / "r.json"
    base = ["--bundle", str(b), "--runs", "0", "--square-queries", "0", "--out", str(out)]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert runner.main([*base, "--format", "onnx"]) == runner.EXIT_DEPS
    err = capsys.readouterr().err
    assert (
        err == "error: no interpreter for .onnx models on this board: 'pip install onnxruntime'\n"
    )
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    assert runner.main([*base, "--backend", "tflite-runtime"]) == runner.EXIT_DEPS
    err = capsys.readouterr().err
    assert err == "error: backend 'tflite-runtime' is not installed: pip install tflite-runtime\n"
    assert not out.exists()
    runner.check_dependencies({}, None, None)  # a manifest without formats: nothing to check


def test_runner_refuses_a_throttled_run_with_exit_6(onnx_bundle, tmp_path, monkeypatch, capsys):
    """A board whose firmware reports throttling (a ``vcgencmd`` on PATH answering as a
    Raspberry Pi does: under-voltage and throttled now): flagged in the results, or refused
    with exit 6 and one line under ``--refuse-throttled``, nothing written."""
    from robustedge.device.board import runner

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "vcgencmd"
    tool.write_text('#!/bin/sh\n[ "$1" = get_throttled ] && echo "throttled=0x5"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    out = tmp_path / "r.json"
    args = ["--bundle", str(onnx_bundle), "--square-queries", "0", "--out", str(out)]
    assert runner.main(args) == 0
    lat = json.loads(out.read_text())["latency"]
    assert lat["throttled"] is True
    assert lat["problems"][:2] == ["throttled: under-voltage", "throttled: throttled"]
    out.unlink()
    capsys.readouterr()
    assert runner.main([*args, "--refuse-throttled"]) == runner.EXIT_THROTTLED == 6
    err = capsys.readouterr().err
    assert err.startswith(
        "error: refusing the latency run: throttled: under-voltage; throttled: throttled"
    )
    assert (
        err.endswith(" (let the board cool, set the governor to performance, and run again)\n")
        and err.count("\n") == 1
    )
    assert not out.exists()


def test_runner_results_written_through_a_hidden_temp_file_beside_them(tmp_path):
    """While the results are written, the folder shows the old file and a hidden temp file in
    the same folder (so the rename is atomic): a reader listing ``*.json`` never sees half."""
    from robustedge.device.board.runner import write_results

    out = tmp_path / "a" / "b" / "r.json"  # missing parents are made
    write_results(out, {"old": 1})
    seen = []

    class Probe(list):
        def __iter__(self):
            seen.append(sorted(p.name for p in out.parent.iterdir()))
            seen.append(sorted(glob.glob(os.path.join(out.parent, "*.json"))))
            return super().__iter__()

    write_results(out, {"new": Probe([1, 2])})
    during, visible = seen
    assert visible == [str(out)]  # shell-style listing: dot files are hidden
    assert len(during) == 2 and during[1] == "r.json" and during[0].startswith(".r.json.")
    assert json.loads(out.read_text()) == {"new": [1, 2]}
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]


def test_runner_verify_only_counts_compressed_models(tmp_path, capsys):
    """`--verify-only` says how many files it verified, and how many compressed models it
    inflated and verified when there are any (none in a bundle stored plain)."""
    from hostile_kit import fake_int8_export
    from robustedge.device.board.runner import main
    from robustedge.device.host.bundle import BundleConfig, build_bundle

    run = fake_int8_export(tmp_path / "run")
    for codec, extra in [("none", ""), ("xz", ", 1 compressed model(s) inflated and verified")]:
        b = build_bundle(run, tmp_path / f"bundle-{codec}", BundleConfig(codec=codec))
        assert main(["--bundle", str(b), "--verify-only"]) == 0
        n = len(manifest_of(b)["files"])
        assert capsys.readouterr().out == f"bundle ok: {n} files verified{extra}\n"
