"""Device harness on the host: bundle contents, the board runner (no torch), measurements,
refusal of tampered / mismatched bundles, missing packages, atomic local deploys, CLI."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robustedge.device.board.bundle_format import MANIFEST, file_entry, verify_bundle
from robustedge.errors import RobustEdgeError

GUARD = (
    "import sys, runpy\n"
    "for m in ('torch', 'tensorflow', 'click', 'yaml', 'onnx', 'safetensors'):\n"
    "    sys.modules[m] = None\n"
)


@pytest.fixture(scope="session")
def bundle(device_bundle) -> Path:
    """The session's device bundle (``device_bundle`` in conftest.py: built once per worker,
    however many modules import this name)."""
    return device_bundle


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / bundle.name
    shutil.copytree(bundle, dst)
    return dst


def run_runner(bundle: Path, *args: str, python: str = sys.executable, guard: str = GUARD):
    """Run the bundle's run_bundle.py in a fresh interpreter with import guards."""
    code = guard + (
        f"sys.argv = ['run_bundle.py', *{list(args)!r}]\n"
        f"runpy.run_path({str(bundle / 'run_bundle.py')!r}, run_name='__main__')\n"
    )
    return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)


def test_bundle_manifest(bundle, device_export):
    m = verify_bundle(bundle)
    export = json.loads((device_export / "export" / "export.json").read_text())
    assert set(m["formats"]) == {"onnx", "tflite-int8"} and m["default_format"] == "tflite-int8"
    art = m["formats"]["tflite-int8"]
    assert art["input"]["layout"] == "NHWC" and art["input"]["dtype"] == "int8"
    assert art["input"]["scale"] > 0 and art["output"]["dtype"] == "int8"
    assert art["parity"] == export["artifacts"]["tflite-int8"]["parity"]
    listed = set(m["files"])
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert on_disk - listed <= {MANIFEST, "results.json"}
    for rel in ("run_bundle.py", "square_core.py", "lib/robustedge/device/board/runner.py"):
        assert rel in listed
    assert set(m["eval_sets"]) >= {"clean", "transfer"}
    for rel, meta in m["files"].items():
        assert file_entry(bundle / rel) == meta


def test_runner_without_torch_measures(bundle, tmp_path):
    """The runner needs only numpy + an interpreter; accuracy equals the host parity figure."""
    b = copy_bundle(bundle, tmp_path)
    out = tmp_path / "r.json"
    args = ["--runs", "200", "--square-queries", "30", "--square-n", "20", "--reference-kernels"]
    proc = run_runner(b, *args, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    m = verify_bundle(b)
    host = m["formats"]["tflite-int8"]["parity"]
    assert r["accuracy"]["clean"] == pytest.approx(host["clean_acc"], abs=1e-12)
    assert r["accuracy"]["transfer"] == pytest.approx(host["transfer_acc"], abs=1e-12)
    assert all(p["equal"] for p in r["parity"].values())
    lat = r["latency"]
    assert lat["runs"] == 200 and lat["warmup"] > 0 and lat["threads"] == 1
    assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    sq = r["robust"][0]
    assert sq["attack"] == "square" and sq["n"] == 20 and sq["max_linf"] <= sq["eps"] + 1e-6
    assert sq["acc"] <= sq["clean_acc_subset"]
    # fewer queries and images than the default: labelled in the results, with the attacks
    n_total = r["n_eval"]["clean"]
    weaker = f"weaker than default: Square-30 on 20 of {n_total} images"
    assert sq["name"] == "Square-30" and sq["n_total"] == n_total and sq["weaker"] == weaker
    wc = r["worst_case"]
    assert wc["weaker"] == weaker and wc["n"] == 20 and "Square-30 on-board" in wc["attacks"]
    assert wc["label"].startswith("worst of PGD-") and wc["label"].endswith(", 20 images")
    assert wc["acc"] <= min(sq["acc"], wc["per_attack"][wc["attacks"][0]])
    assert r["kernels"] == "BUILTIN_REF" and r["backend"] in ("litert", "tflite-runtime")
    assert r["emulated"] is False and r["peak_rss_mb"] > 0
    assert r["flash_bytes"] == (b / r["model_file"]).stat().st_size  # compressed by default
    assert r["model_bytes"] == m["formats"]["tflite-int8"]["model_bytes"] > r["flash_bytes"]
    assert r["board"]["machine"] and r["board"]["numpy"] == np.__version__


def test_onnx_format_runs(bundle, tmp_path):
    b = copy_bundle(bundle, tmp_path)
    out = tmp_path / "r.json"
    proc = run_runner(
        b, "--format", "onnx", "--runs", "200", "--square-queries", "0", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["backend"] == "onnxruntime" and r["kernels"].startswith("CPUExecutionProvider")
    assert r["parity"]["clean"]["equal"] and r["robust"] == []


@pytest.mark.parametrize("damage", ["flip", "delete", "manifest"])
def test_tampered_bundle_refused(bundle, tmp_path, damage):
    b = copy_bundle(bundle, tmp_path)
    model = b / verify_bundle(b)["formats"]["tflite-int8"]["file"]
    if damage == "flip":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    elif damage == "delete":
        (b / "square_core.py").unlink()
    else:
        (b / MANIFEST).write_text("{not json")
    proc = run_runner(b, "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing bundle:")
    assert not (tmp_path / "r.json").exists()


def test_other_input_shape_refused(bundle, tmp_path):
    b = copy_bundle(bundle, tmp_path)
    m = json.loads((b / MANIFEST).read_text())
    rel = m["eval_sets"]["clean"]
    np.savez(b / rel, x=np.zeros((4, 1, 10, 10), np.float32), y=np.zeros(4, np.int64))
    m["files"][rel] = file_entry(b / rel)  # consistent hashes: only the shape is wrong
    (b / MANIFEST).write_text(json.dumps(m))
    proc = run_runner(b, "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 3 and "another input shape" in proc.stderr


@pytest.mark.parametrize(
    ("hidden", "hint"),
    [
        (("numpy",), "pip install numpy"),
        (("ai_edge_litert", "tflite_runtime"), "pip install ai-edge-litert"),
    ],
)
def test_missing_packages_named(bundle, tmp_path, hidden, hint):
    guard = GUARD + "".join(f"sys.modules[{h!r}] = None\n" for h in hidden)
    proc = run_runner(bundle, "--out", str(tmp_path / "r.json"), guard=guard)
    assert proc.returncode == 4 and hint in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_device_package_imports_without_torch():
    code = GUARD + (
        "import robustedge.device.host.bundle, robustedge.device.host.targets\n"
        "import robustedge.device.board.onboard, robustedge.device.board.config\n"
        "import robustedge.device.host.qemu, robustedge.device.board.runner\n"
        "bad = [m for m in ('torch', 'tensorflow') if sys.modules.get(m) is not None]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_local_deploy_is_atomic(bundle, tmp_path, monkeypatch):
    from robustedge.device.host import targets

    sd = tmp_path / "sdcard" / "home" / "pi"
    with pytest.raises(RobustEdgeError, match="is the card mounted"):
        targets.make_target(str(sd)).deploy(bundle)
    sd.parent.mkdir(parents=True)
    t = targets.make_target(str(sd))
    where = Path(t.deploy(bundle))
    assert where == sd / bundle.name and verify_bundle(where)
    r = t.run(str(where), ["--runs", "200", "--square-queries", "0", "--reference-kernels"])
    host = verify_bundle(where)["formats"]["tflite-int8"]["parity"]
    assert r["accuracy"]["clean"] == pytest.approx(host["clean_acc"], abs=1e-12)

    def disk_full(src, dst, *a, **k):
        Path(dst).mkdir(parents=True)
        (Path(dst) / "half").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(targets.shutil, "copytree", disk_full)
    with pytest.raises(RobustEdgeError, match="No space left"):
        t.deploy(bundle)
    assert verify_bundle(where)  # the previous bundle is still live and intact
    assert sorted(p.name for p in sd.iterdir()) == [bundle.name]  # no temp leftovers


def test_tampered_bundle_not_deployed(bundle, tmp_path):
    from robustedge.device.host.targets import make_target

    b = copy_bundle(bundle, tmp_path / "src")
    (b / "run_bundle.py").write_text("print('pwned')\n")
    dest = tmp_path / "board"
    with pytest.raises(RobustEdgeError, match="tampered"):
        make_target(str(dest)).deploy(b)
    assert not dest.exists() or list(dest.iterdir()) == []


def test_board_without_numpy_local(bundle):
    from robustedge.device.host.targets import make_target

    py = shutil.which("python3", path="/usr/bin")
    probe = subprocess.run([py, "-c", "import numpy"], capture_output=True) if py else None
    if probe is None or probe.returncode == 0:
        pytest.skip("needs a system python3 without numpy at /usr/bin/python3")
    with pytest.raises(RobustEdgeError, match="pip install numpy"):
        make_target("local", python=py).bench(bundle, ["--runs", "200"])


def test_target_names_and_ssh_errors(tmp_path):
    from robustedge.device.host.targets import TARGETS, SSHTarget, make_target

    assert {"local", "ssh", "qemu-aarch64", "qemu-armv7"} <= set(TARGETS.names())
    with pytest.raises(RobustEdgeError, match="unknown target 'pi'"):
        make_target("pi")
    t = SSHTarget("ssh://pi@127.0.0.1:2222/~/bench")
    assert t.dest == "pi@127.0.0.1" and t.base == "bench" and "2222" in t.ssh
    assert "BatchMode=yes" in t.ssh and not any("StrictHostKeyChecking" in o for o in t.ssh)
    assert SSHTarget("ssh://pi@h/opt/b").base == "/opt/b"
    with pytest.raises(RobustEdgeError, match="ssh to nobody@127.0.0.1 failed"):
        SSHTarget("ssh://nobody@127.0.0.1:1", connect_timeout=3).deploy(tmp_path)


def test_cli_bundle_tar_and_bench(device_export, tmp_path, cli):
    tar = tmp_path / "b.tar"
    proc = cli("bundle", str(device_export), "--out", str(tar), "--formats", "tflite-int8")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "res.json"
    proc = cli(
        "bench",
        "--bundle",
        str(tar),
        "--target",
        "local",
        "--out",
        str(out),
        "--runs",
        "200",
        "--square-queries",
        "10",
        "--square-n",
        "5",
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["target"] == "local" and r["format"] == "tflite-int8" and "latency p50" in proc.stdout
    n_total = r["n_eval"]["clean"]
    assert f"NOTE weaker than default: Square-10 on 5 of {n_total} images" in proc.stdout
    assert f"({r['worst_case']['label']})" in proc.stdout and " transfer " in proc.stdout
    bad = tmp_path / "x"
    proc = cli("bundle", str(device_export), "--out", str(bad), "--formats", "tflite-int4")
    assert proc.returncode == 2 and "not exported" in proc.stderr
    assert not bad.exists()


def test_cli_deploy_and_unreachable(bundle, tmp_path, cli):
    card = tmp_path / "sd" / "rootfs" / "home" / "pi"
    card.parent.mkdir(parents=True)
    proc = cli("deploy", str(bundle), "--target", str(card))
    assert proc.returncode == 0, proc.stderr
    assert verify_bundle(card / bundle.name)
    proc = cli(
        "deploy",
        str(bundle),
        "--target",
        "ssh://nobody@127.0.0.1:1/~/b",
        "--ssh-option",
        "ConnectTimeout=3",
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ssh to nobody@127.0.0.1 failed")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_setup_qemu_needs_root(tmp_path, monkeypatch):
    from robustedge.device.host import qemu

    monkeypatch.setattr(qemu.os, "geteuid", lambda: 1000)
    with pytest.raises(RobustEdgeError, match="needs root"):
        qemu.setup_qemu("aarch64", root=tmp_path)
    with pytest.raises(RobustEdgeError, match="unknown arch 'mips'"):
        qemu.setup_qemu("mips", root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    src = tmp_path / "sources.list"
    src.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n")
    assert qemu.debian_mirror([src]) == "http://mirror.example/debian"


def small_bundle(bundle: Path, tmp_path: Path, k: int, clean_transfer: int = 0) -> Path:
    """A copy of ``bundle`` whose eval sets hold the first ``k`` test images, the first
    ``clean_transfer`` transfer examples replaced by their clean images (so the transfer set
    cannot break those); the manifest's sha256s follow the new files."""
    b = copy_bundle(bundle, tmp_path)
    m = json.loads((b / MANIFEST).read_text())
    with np.load(b / m["eval_sets"]["clean"]) as z:
        xc, y = z["x"][:k], z["y"][:k]
    with np.load(b / m["eval_sets"]["transfer"]) as z:
        xt = z["x"][:k].copy()
    xt[:clean_transfer] = xc[:clean_transfer]
    for name, x in (("clean", xc), ("transfer", xt)):
        rel = m["eval_sets"][name]
        np.savez(b / rel, x=x, y=y)
        m["files"][rel] = file_entry(b / rel)
    (b / MANIFEST).write_text(json.dumps(m))
    verify_bundle(b)
    return b


def test_onboard_square_default_is_strong(bundle, tmp_path):
    """By default the board runs Square-1000 (one restart) on every image of the bundle and the
    results record that budget, unlabelled; the headline is the worst case per image."""
    from robustedge.device.board.config import BenchConfig
    from robustedge.device.board.measure import transfer_name
    from robustedge.device.board.runner import parser

    o, a = BenchConfig(), parser().parse_args([])
    assert (o.square_queries, o.square_restarts, o.square_n) == (1000, 1, None)
    assert (a.square_queries, a.square_restarts, a.square_n) == (1000, 1, None)
    b = small_bundle(bundle, tmp_path, 12)
    out = tmp_path / "r.json"
    proc = run_runner(b, "--runs", "0", "--out", str(out))  # no Square option: the defaults
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    (sq,) = r["robust"]
    assert (sq["name"], sq["n_queries"], sq["restarts"], sq["n"], sq["n_total"]) == (
        "Square-1000",
        1000,
        1,
        12,
        12,
    )
    assert sq["weaker"] is None and sq["max_linf"] <= sq["eps"] + 1e-6
    wc = r["worst_case"]
    t = transfer_name(verify_bundle(b)["transfer_attack"])
    assert t.startswith("PGD-") and t.endswith(" transfer")
    assert wc["label"] == f"worst of {t} and Square-1000 on-board, eps 0.1, 12 images"
    assert wc["weaker"] is None and wc["n"] == wc["n_total"] == 12
    want = {t: r["accuracy"]["transfer"], "Square-1000 on-board": sq["acc"]}
    assert wc["per_attack"] == pytest.approx(want, abs=1e-6)
    assert wc["acc"] <= min(wc["per_attack"].values())


def test_worst_case_is_per_image(bundle, tmp_path):
    """An image broken by only one of the two attacks is not robust: on a bundle where the
    transfer set cannot break the first 30 images (they are the clean ones) and a small Square
    budget leaves some transfer-broken images standing, the worst case is below both attacks
    and equals the per-image AND computed here from the interpreter's own predictions."""
    from robustedge.device.board.backends import open_model
    from robustedge.device.board.config import BenchConfig
    from robustedge.device.board.onboard import (
        evaluate_sets,
        load_npz,
        make_predict,
        model_path,
        run_bundle,
        square_results,
        worst_case,
    )

    b = small_bundle(bundle, tmp_path, 60, clean_transfer=30)
    m = verify_bundle(b)
    art = m["formats"]["tflite-int8"]
    opts = BenchConfig(runs=0, square_queries=15, seed=0)
    path, _ = model_path(b / art["file"], art, tmp_path)
    predict = make_predict(open_model(str(path)), art["input"], art["output"])
    sets, _acc, _dig, correct = evaluate_sets(b, m, open_model(str(path)), art["input"], predict)
    rows, survived = square_results(b, m, predict, sets, opts)
    wc = worst_case(m, correct, rows[0], survived)
    (xc, y), (xt, _) = (
        load_npz(b / m["eval_sets"]["clean"]),
        load_npz(b / m["eval_sets"]["transfer"]),
    )
    clean_ok = predict(xc)[0].argmax(1) == y
    transfer_ok = predict(xt)[0].argmax(1) == y
    only_square = clean_ok & transfer_ok & ~survived
    only_transfer = clean_ok & survived & ~transfer_ok
    assert only_square.any() and only_transfer.any()  # the union matters here
    robust = clean_ok & transfer_ok & survived
    assert wc["acc"] == pytest.approx(robust.mean(), abs=1e-6)
    assert wc["acc"] < min(wc["per_attack"].values())
    t, s = wc["attacks"]
    assert wc["broken_only_by"] == {t: int(only_transfer.sum()), s: int(only_square.sum())}
    assert wc["weaker"] == "weaker than default: Square-15 on 60 of 60 images"
    # the runner's own path (run_bundle) records the same figure
    full = run_bundle(b, m, opts)
    assert full.worst_case["acc"] == wc["acc"] and full.robust[0]["acc"] == rows[0]["acc"]


@pytest.mark.parametrize("bad", ["0", "-3", "some"])
def test_square_n_bad_values(bad, capsys):
    from robustedge.device.board import runner
    from robustedge.device.board.config import BenchConfig

    with pytest.raises(ValueError, match="square_n must be >= 1|need a number of images"):
        BenchConfig.from_argv(["--square-n", bad])
    if bad == "some":  # not a number: argparse's usage error
        with pytest.raises(SystemExit):
            runner.parser().parse_args(["--square-n", bad])
    else:  # out of range: BenchConfig refuses it, the runner exits 2 in one line
        assert runner.main(["--square-n", bad, "--bundle", "/nonexistent"]) == runner.EXIT_OTHER
        assert (
            capsys.readouterr().err == f"error: square_n must be >= 1 (or all images), got {bad}\n"
        )
    assert runner.parser().parse_args(["--square-n", "ALL"]).square_n is None
    assert runner.parser().parse_args(["--square-n", "7"]).square_n == 7
    with pytest.raises(ValueError, match="square_n"):
        BenchConfig(square_n=0)
    with pytest.raises(ValueError, match="square_restarts"):
        BenchConfig(square_restarts=0)
