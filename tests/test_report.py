"""Report: self-contained HTML + Markdown from JSON only; renders in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from _recipe_run import recipe_run
from conftest import run_cli
from robustedge.errors import RobustEdgeError
from robustedge.report import build_report
from robustedge.report.collect import find_runs
from robustedge.report.plots import pareto_front


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_run) -> Path:
    return recipe_run(tmp_path_factory, tiny_run)


@pytest.fixture(scope="module")
def report(done, tmp_path_factory):
    return build_report([done], tmp_path_factory.mktemp("report") / "report.html")


def test_html_is_self_contained(report):
    html = report.html_path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(imgs) == 3  # trade-off, latency, Pareto
    import base64

    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)


def test_report_holds_every_section(report, done):
    html, md = report.html_path.read_text(), report.md_path.read_text()
    for title in ("Accuracy vs compression", "Export ledger", "On-device results"):
        assert title in html and title in md
    for col in ("clean %", "pgd eps=0.1 %", "square eps=0.1 %", "corruptions (mean) %"):
        assert col in md, col
    assert "prox-s0.8" in md and "| local |" in md
    # numbers come from the JSON files, each in its own row and column
    models = md_table(md, "Accuracy vs compression")
    for name, path in (("teacher", "teacher"), ("prox-s0.8", "students/prox-s0.8")):
        m = json.loads((done / path / "metrics.json").read_text())
        assert models[name]["clean %"] == f"{100 * m['clean_acc']:.1f}", name
    student = json.loads((done / "students/prox-s0.8/metrics.json").read_text())
    assert models["prox-s0.8"]["sparsity %"] == f"{100 * student['sparsity']['global']:.1f}"
    export = json.loads((done / "teacher/export/export.json").read_text())["artifacts"]["onnx"]
    row = md_table(md, "Export ledger", key=("model", "format"))[("teacher", "onnx")]
    assert row["bytes"] == f"{export['bytes']:,}"
    assert row["clean %"] == f"{100 * export['parity']['clean_acc']:.1f}"
    assert row["parity gate"] == "pass"
    bench = json.loads((done / "teacher/device/local/results.json").read_text())
    dev = md_table(md, "On-device results", key=("model", "target"))[("teacher", "local")]
    assert dev["clean %"] == f"{100 * bench['accuracy']['clean']:.1f}"
    assert dev["model bytes"] == f"{bench['model_bytes']:,}"
    assert dev["flash bytes"] == f"{bench['flash_bytes']:,}"
    assert dev["peak RSS MiB"] == f"{bench['peak_rss_mb']}"


def test_three_sizes_per_model(report, done):
    """Ledger, device results and report name flash bytes (stored, compressed), model bytes
    (loaded) and peak RSS, each from its own JSON file."""
    md = report.md_path.read_text()
    dev = md_table(md, "On-device results", key=("model", "target"))
    ledger_rows = md_table(md, "Export ledger", key=("model", "format"))
    for name, path in (("teacher", "teacher"), ("prox-s0.8", "students/prox-s0.8")):
        bench = json.loads((done / path / "device/local/results.json").read_text())
        assert bench["codec"] == "xz" and 0 < bench["flash_bytes"] < bench["model_bytes"]
        assert bench["decompress_ms"] > 0 and bench["peak_rss_mb"] > 0
        row = dev[(name, "local")]
        assert row["flash bytes"] == f"{bench['flash_bytes']:,}"
        assert row["model bytes"] == f"{bench['model_bytes']:,}"
        assert row["peak RSS MiB"] == f"{bench['peak_rss_mb']}"
        ledger = json.loads((done / path / "export/ledger.json").read_text())
        onnx = next(r for r in ledger["stages"] if r.get("format") == "onnx")
        assert onnx["flash_codec"] == "xz" and onnx["model_bytes"] == onnx["bytes"]
        assert ledger_rows[(name, "onnx")]["flash bytes"] == f"{onnx['flash_bytes']:,}"
        # the ledger's flash bytes are what the bundle stored and the board reported
        assert onnx["flash_bytes"] == bench["flash_bytes"]
        assert onnx["model_bytes"] == bench["model_bytes"]


def _wins_from_json(done: Path) -> dict:
    """(student, metric) -> (student value, teacher value), recomputed from results.json."""
    from robustedge.report.collect import BOARD_METRICS

    def vals(path):
        d = json.loads((done / path / "device/local/results.json").read_text())
        return {"flash_bytes": d["flash_bytes"], "p50_ms": d["latency"]["p50_ms"],
                "peak_rss_mb": d["peak_rss_mb"]}  # fmt: skip

    teacher = vals("teacher")
    out = {}
    for name in ("prox-s0.5", "prox-s0.8"):
        mine = vals(f"students/{name}")
        for key, _label, _unit, margin in BOARD_METRICS:
            if mine[key] < teacher[key] * (1 - margin):
                out[(name, key)] = (mine[key], teacher[key])
    return out


def test_beats_teacher_marks_from_real_runs(report, done):
    from robustedge.report.collect import teacher_wins

    wins = {(w.student, w.metric): (w.student_value, w.teacher_value) for w in teacher_wins(
        find_runs([done]))}  # fmt: skip
    assert wins == _wins_from_json(done)
    # sparse students' zeros compress: both store fewer flash bytes than the dense teacher
    assert {("prox-s0.5", "flash_bytes"), ("prox-s0.8", "flash_bytes")} <= set(wins)
    summary = report.summary.splitlines()
    head = summary.index("board: students that beat the teacher (same target and format):")
    lines = summary[head + 1 :]
    runs = {r.name: r for r in find_runs([done])}
    t_acc = runs["teacher"].accuracy["pgd eps=0.1"]
    for name in ("prox-s0.5", "prox-s0.8"):
        (line,) = [ln for ln in lines if ln.startswith(f"  {name} on local [onnx]: ")]
        s, t = wins[(name, "flash_bytes")]
        assert f"flash bytes {s:,.0f} B vs {t:,.0f} B ({100 * (s / t - 1):+.1f}%)" in line
        acc = runs[name].accuracy["pgd eps=0.1"]
        assert line.endswith(
            f"robust (pgd eps=0.1) {100 * acc:.1f}% vs teacher {100 * t_acc:.1f}% "
            f"({100 * (acc - t_acc):+.1f} pts)"
        )
        assert ("p50 latency" in line) == ((name, "p50_ms") in wins)
    md = report.md_path.read_text()
    dev = md_table(md, "On-device results", key=("model", "target"))
    assert dev[("teacher", "local")]["beats teacher on"] == "-"
    s, t = wins[("prox-s0.8", "flash_bytes")]
    assert f"flash {100 * (s / t - 1):+.0f}%" in dev[("prox-s0.8", "local")]["beats teacher on"]


def test_beats_teacher_needs_more_than_noise(done, tmp_path):
    """A student 3 % faster than the teacher is noise (margin 5 %), 10 % faster is a win; a
    bigger flash file is never one; no teacher bench, no board lines."""
    out = tmp_path / "out"
    shutil.copytree(done, out)
    teacher = json.loads((out / "teacher/device/local/results.json").read_text())
    path = out / "students/prox-s0.5/device/local/results.json"
    student = json.loads(path.read_text())
    t50 = teacher["latency"]["p50_ms"]
    student["flash_bytes"] = teacher["flash_bytes"] + 1
    student["peak_rss_mb"] = teacher["peak_rss_mb"]
    for factor, wins in ((0.97, False), (0.90, True)):
        student["latency"]["p50_ms"] = t50 * factor
        path.write_text(json.dumps(student))
        rep = build_report([out], tmp_path / "r.html")
        lines = [ln for ln in rep.summary.splitlines() if ln.startswith("  prox-s0.5 on local")]
        if wins:
            (line,) = lines
            assert f"p50 latency {t50 * factor:.4g} ms vs {t50:.4g} ms (-10.0%)" in line
            assert "flash bytes" not in line and "peak RSS" not in line
        else:
            assert lines == []
    student["flash_bytes"] = teacher["flash_bytes"] // 2  # half the bytes, but stored plain:
    student["codec"] = None  # not comparable with the teacher's xz file, so no flash win
    path.write_text(json.dumps(student))
    rep = build_report([out], tmp_path / "r.html")
    assert "flash bytes" not in "".join(
        ln for ln in rep.summary.splitlines() if ln.startswith("  prox-s0.5 on local")
    )
    shutil.rmtree(out / "teacher/device")
    rep = build_report([out], tmp_path / "r.html")
    assert "board:" not in rep.summary


def md_table(md: str, title: str, key=("model",)) -> dict:
    """The rows of the Markdown table under ``## <title>...`` as {key cells: {column: cell}}."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {title}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    header, body = rows[0], rows[2:]
    out = {}
    for cells in body:
        row = dict(zip(header, cells))
        k = tuple(row[c] for c in key)
        out[k[0] if len(key) == 1 else k] = row
    return out


def test_emulated_rows_are_labelled(done, tmp_path):
    out = tmp_path / "runs"
    shutil.copytree(done / "teacher", out / "teacher")
    res = json.loads((out / "teacher/device/local/results.json").read_text())
    res.update(target="qemu-aarch64", emulated=True)
    (out / "teacher/device/qemu-aarch64").mkdir()
    (out / "teacher/device/qemu-aarch64/results.json").write_text(json.dumps(res))
    rep = build_report([out], tmp_path / "r.html")
    md = rep.md_path.read_text()
    assert "qemu-aarch64 (EMULATED)" in md and "| local |" in md
    assert "EMULATED" in rep.summary


def test_runs_found_from_any_folder_level(done):
    by_summary = [r.name for r in find_runs([done])]
    assert by_summary == ["teacher", "prox-s0.5", "prox-s0.8"]
    assert [r.name for r in find_runs([done / "students" / "prox-s0.5"])] == ["prox-s0.5"]
    assert len(find_runs([done / "students"])) == 2


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(RobustEdgeError, match="no such run"):
        find_runs([tmp_path / "nope"])
    with pytest.raises(RobustEdgeError, match="no run folders"):
        find_runs([tmp_path])
    (tmp_path / "r").mkdir()
    (tmp_path / "r/model.json").write_text("{}")
    (tmp_path / "r/metrics.json").write_text("{ broken")
    with pytest.raises(RobustEdgeError, match="corrupt JSON"):
        find_runs([tmp_path / "r"])


def test_pareto_front():
    pts = [(0.9, 1.0, 10.0), (0.8, 2.0, 20.0), (0.95, 3.0, 10.0), (0.5, 0.5, 5.0)]
    assert pareto_front(pts) == [0, 2, 3]  # (0.8, 2, 20) is dominated by (0.9, 1, 10)


def test_cli(done, report, tmp_path):
    """`robustedge report DIR --out X.html --title T`: both files written, the title used, the
    same tables as the library's report, and the paths printed."""
    res = run_cli("report", str(done), "--out", str(tmp_path / "x.html"), "--title", "My runs")
    assert res.returncode == 0, res.stderr
    html, md = (tmp_path / "x.html").read_text(), (tmp_path / "x.md").read_text()
    assert "<title>My runs</title>" in html and md.splitlines()[0] == "# My runs"
    assert str(tmp_path / "x.html") in res.stdout and str(tmp_path / "x.md") in res.stdout
    lib = report.md_path.read_text()
    for title, key in (
        ("Accuracy vs compression", ("model",)),
        ("Export ledger", ("model", "format")),
    ):
        assert md_table(md, title, key) == md_table(lib, title, key), title
    student = json.loads((done / "students/prox-s0.8/metrics.json").read_text())
    row = md_table(md, "Accuracy vs compression")["prox-s0.8"]
    assert row["clean %"] == f"{100 * student['clean_acc']:.1f}"


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("chromium not installed (scripts/install-system-deps.sh installs it)")
    return exe


def test_renders_in_headless_chromium(report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        report.html_path.resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    img = imread(str(shot))
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    grey = img[..., :3].mean(axis=2)
    assert grey.std() > 0.05  # not a blank page
    assert (grey < 0.5).mean() > 0.01  # some dark ink: text, axes, lines
    assert np.unique((grey * 255).astype(np.uint8)).size > 50  # figures, not just one colour


def test_structured_sparsity_is_weights_removed_vs_teacher(tmp_path):
    run = tmp_path / "s"
    run.mkdir()
    (run / "model.json").write_text("{}")
    metrics = {
        "kind": "compress",
        "method": "prox",
        "structured": True,
        "sparsity": {"global": 0.0},
        "params": 250,
        "nonzero_params": 250,
        "teacher": {"params": 1000},
        "clean_acc": 0.5,
        "robust": [{"attack": "pgd", "eps": 0.1, "acc": 0.25}],
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (info,) = find_runs([run])
    assert info.sparsity == pytest.approx(0.75) and info.family == "prox (structured)"
    assert info.accuracy == {"pgd eps=0.1": 0.25}


def test_unfinished_recipe_run_is_left_out_with_a_note(done, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(done, out)
    (out / "students/prox-s0.8/metrics.json").unlink()
    rep = build_report([out], tmp_path / "r.html")
    md = rep.md_path.read_text()
    assert "prox-s0.8: not finished" in md and "| prox-s0.5 |" in md
    assert "2 model(s)" in rep.summary
