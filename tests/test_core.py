"""Registries, atomic writes, configs."""

from __future__ import annotations

import pytest

from robustedge.errors import UnknownNameError
from robustedge.io import atomic_path, read_json, staging_dir, write_json
from robustedge.registry import Registry
from robustedge.training.config import TrainConfig


def test_registry_duplicate_and_unknown():
    reg: Registry = Registry("widget")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(object)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'b' \(known: a\)"):
        reg.get("b")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_staging_dir_replaces_only_on_success(tmp_path):
    final = tmp_path / "out"
    with staging_dir(final) as d:
        (d / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with staging_dir(final) as d:
            (d / "a").write_text("2")
            raise RuntimeError
    assert (final / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs must be > 0"),
        ({"eps": -0.1}, "eps must lie in"),
        ({"eps": float("nan")}, "eps must lie in"),
        ({"model": "nope"}, "unknown model 'nope'"),
        ({"data": "nope"}, "unknown data set 'nope'"),
        ({"adversary": "nope"}, "unknown adversary 'nope'"),
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"adversary": "pgd", "eps": 0.0}, "needs eps > 0"),
    ],
)
def test_train_config_rejects(kwargs, match):
    with pytest.raises((ValueError, KeyError), match=match):
        TrainConfig(**kwargs)


def test_train_config_round_trip():
    cfg = TrainConfig(model="tiny", optimizer="sgd")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown config keys: bogus"):
        TrainConfig.from_dict({**cfg.to_dict(), "bogus": 1})
