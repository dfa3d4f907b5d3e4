"""The Python API (robustedge.api): the CLI is a thin wrapper over it (identical run folders
for one seed), typed results hold the JSON files' fields, and settings are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustedge import api
from robustedge.cli import main as cli_main
from robustedge.errors import RobustEdgeError
from robustedge.training.config import TrainConfig

TRAIN = {"model": "tiny", "epochs": 1, "steps": 1, "lr": 0.01, "seed": 3}


def cli(*args: str) -> None:
    """The `robustedge` command in this process (exit 0 required)."""
    try:
        cli_main(list(args))
    except SystemExit as e:  # pragma: no cover - only on failure
        raise AssertionError(f"robustedge {' '.join(args)} exited {e.code}") from None


# measurements of the process, not results: wall time and the peak RSS
PROCESS_MEASURES = ("seconds", "rss_peak_bytes")


def without_timing(value):
    """A JSON value without its measurements of the process (they differ run to run)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in PROCESS_MEASURES}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def assert_same_run_folder(a: Path, b: Path) -> None:
    """Same files; same bytes for weights, masks, spec and config; same JSON but timings."""
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.startswith("checkpoint/"):
            continue  # its history holds the epochs' wall times
        if rel.endswith(".json"):
            ja, jb = (json.loads((d / rel).read_text()) for d in (a, b))
            assert without_timing(ja) == without_timing(jb), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """The same teacher trained once by `robustedge train` and once by api.train."""
    root = tmp_path_factory.mktemp("api")
    flags = [f"--{k}={v}" for k, v in TRAIN.items()]
    cli("train", *flags, "--no-progress", "--out", str(root / "cli"))
    result = api.train(out=root / "api", **TRAIN)
    return root, result


def test_cli_and_api_train_write_identical_run_folders(teachers):
    root, result = teachers
    assert_same_run_folder(root / "cli", root / "api")
    metrics = json.loads((root / "api" / "metrics.json").read_text())
    assert result.to_json() == metrics  # the typed result is the file, key for key
    assert result.run == root / "api" and result.clean_acc == metrics["clean_acc"]
    assert result.robust_acc() == {
        f"{r['attack']} eps={r['eps']:g}": r["acc"] for r in metrics["robust"]
    }


def test_cli_and_api_compress_write_identical_run_folders(teachers):
    root, _ = teachers
    opts = {"sparsity": 0.5, "epochs": 1, "steps": 1, "seed": 1}
    flags = [f"--{k}={v}" for k, v in opts.items()]
    cli("compress", "--teacher", str(root / "cli"), *flags, "--out", str(root / "s-cli"))
    result = api.compress(teacher=str(root / "cli"), out=root / "s-api", **opts)
    assert_same_run_folder(root / "s-cli", root / "s-api")
    m_api = json.loads((root / "s-api" / "metrics.json").read_text())
    assert result.to_json() == m_api
    assert result.sparsity["global"] == pytest.approx(0.5, abs=1e-3)
    assert result.method == m_api["method"] and result.nonzero_params < result.params


def test_api_evaluate_matches_the_eval_command(teachers, capsys):
    root, _ = teachers
    res = api.evaluate(root / "api", attacks=("fgsm",), eps=(0.1,), seed=2)
    on_disk = json.loads((root / "api" / "eval.json").read_text())
    assert res.to_json() == on_disk and res.path == root / "api" / "eval.json"
    capsys.readouterr()
    cli("eval", str(root / "cli"), "--attack", "fgsm", "--eps", "0.1", "--seed", "2", "--json")
    printed = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in printed.items() if k != "run"} == {
        k: v for k, v in on_disk.items() if k != "run"
    }


def test_config_objects_mappings_and_settings_build_the_same_config(tmp_path):
    from robustedge.api.inputs import build_config

    base = TrainConfig(**TRAIN)
    assert build_config(TrainConfig, None, TRAIN) == base
    assert build_config(TrainConfig, dict(TRAIN), {}) == base
    assert build_config(TrainConfig, TrainConfig(), TRAIN) == base
    assert build_config(TrainConfig, base, {"epochs": 7}).epochs == 7
    with pytest.raises(RobustEdgeError, match="unknown TrainConfig setting.*epoch.*known:"):
        build_config(TrainConfig, None, {"epoch": 1})
    with pytest.raises(ValueError, match="eps must lie in"):
        api.train(out=tmp_path / "x", eps=2.0)
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_compress_flat_keys_route_to_the_method_options():
    from robustedge.api.inputs import build_config
    from robustedge.compress import CompressConfig

    cfg = build_config(CompressConfig, None, {"teacher": "t", "method": "admm", "sparsity": 0.3})
    assert cfg.method == "admm" and type(cfg.options).__name__ != "MethodOptions"
    again = build_config(CompressConfig, cfg, {"sparsity": 0.6})
    assert again.sparsity == 0.6 and again.options == cfg.options


def test_top_level_names_are_the_api_and_subpackages_stay_subpackages():
    import robustedge.compress
    import robustedge.export
    import robustedge.report

    assert robustedge.train is api.train and robustedge.load_run is api.load_run
    assert robustedge.api is api and robustedge.TrainResult is api.TrainResult
    # compress / export / report are subpackages: the functions are api.compress, ...
    assert robustedge.compress.__name__ == "robustedge.compress"
    assert callable(api.compress) and callable(api.export) and callable(api.report)
    assert set(robustedge.API_NAMES) <= set(api.__all__)
    with pytest.raises(AttributeError):
        robustedge.no_such_name  # noqa: B018


@pytest.mark.export
def test_export_bundle_bench_report_return_their_files(teachers, tmp_path):
    root, _ = teachers
    x = api.export(root / "api", formats=("onnx",))
    assert x.passed and x.to_json() == json.loads((x.out / "export.json").read_text())
    assert x.path("onnx").is_file() and x.ledger == json.loads((x.out / "ledger.json").read_text())
    b = api.bundle(root / "api", tmp_path / "bundle")
    assert b.formats == ["onnx"] and b.files + 1 == sum(1 for p in b.path.rglob("*") if p.is_file())
    res = api.bench(b.path, "local", runs=0, square_n=4, out=tmp_path / "results.json")
    assert res.to_json() == json.loads((tmp_path / "results.json").read_text())
    assert res.target == "local" and set(res.accuracy) == {"clean", "transfer"}
    assert res.accuracy["clean"] == pytest.approx(x.artifacts["onnx"]["parity"]["clean_acc"])
    assert res.latency is None  # runs=0: accuracy only
    rep = api.report([root / "api"], tmp_path / "report.html")
    assert rep.html_path.is_file() and rep.md_path.is_file() and "model(s)" in rep.summary


def test_run_recipe_returns_the_summary(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: t\ndata: {name: digits}\n"
        "teacher:\n  train: {model: tiny, epochs: 1, adversary: none, eps: 0.0}\n"
    )
    started = []
    res = api.run_recipe(recipe, tmp_path / "out", on_start=started.append)
    assert res.to_json() == json.loads((tmp_path / "out" / "summary.json").read_text())
    assert res.recipe == "t" and started and {s["status"] for s in res.stages} == {"done"}
    again = api.run_recipe(recipe, tmp_path / "out")
    assert {s["status"] for s in again.stages} == {"cached"}
