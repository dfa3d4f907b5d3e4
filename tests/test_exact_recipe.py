"""Exact-value unit tests of recipe (stage runner), to kill mutmut's mutants (issue 16; the rule is
in tests/test_exact_attacks.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

# ------------------------------------------------------------------------ recipe/runner


def _stage(root: Path, sid: str, log: list, up=(), text="x", files=None, **kw):
    from robustedge.recipe.runner import Stage

    path = root / sid / "out.txt"

    def execute():
        log.append(sid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    outputs = (lambda: [path]) if files is None else files
    return Stage(sid, "k", {"v": 1}, execute, outputs, up, **kw)


def test_stage_runner_records_and_callbacks(tmp_path):
    from robustedge.recipe.runner import SCHEMA, STAGE_FILE, StageRunner, digest_of, file_sha256

    assert (STAGE_FILE, SCHEMA) == ("stage.json", "robustedge.recipe.stage/1")
    seen, started, log = [], [], []
    r = StageRunner(tmp_path, on_result=seen.append, on_start=started.append)
    t0 = time.perf_counter()
    res = r.run([_stage(tmp_path, "a", log), _stage(tmp_path, "b", log, up=("a",))])
    elapsed = time.perf_counter() - t0
    assert [x.status for x in res] == ["done", "done"] and started == ["a", "b"]
    assert [x.id for x in seen] == ["a", "b"] and log == ["a", "b"]
    rec = json.loads((tmp_path / "stages" / "b" / "stage.json").read_text())
    outs = {"a/out.txt": file_sha256(tmp_path / "a" / "out.txt")}
    assert res[0].outputs == outs and res[0].digest == digest_of(outs)
    assert rec["schema"] == SCHEMA and rec["id"] == "b" and rec["kind"] == "k"
    assert rec["config"] == {"v": 1} and rec["upstream"] == {"a": digest_of(outs)}
    assert rec["outputs"] == {"b/out.txt": file_sha256(tmp_path / "b" / "out.txt")}
    # the stage's own run time (rounded to ms), inside the call's
    assert 0 <= rec["seconds"] <= elapsed + 1e-3 and rec["seconds"] == round(res[1].seconds, 3)
    assert rec["finished"] and len(rec["input_hash"]) == 64
    assert r.record_path("b") == tmp_path / "stages" / "b" / "stage.json"
    seen.clear()
    started.clear()
    again = StageRunner(tmp_path, on_result=seen.append, on_start=started.append)
    res = again.run([_stage(tmp_path, "a", log), _stage(tmp_path, "b", log, up=("a",))])
    assert [x.status for x in res] == ["cached", "cached"] and started == []
    assert res[1].digest == digest_of(rec["outputs"]) and res[1].outputs == rec["outputs"]
    assert [x.id for x in seen] == ["a", "b"] and log == ["a", "b"]


def test_stage_runner_skips(tmp_path):
    from robustedge.recipe.runner import SkipStage, StageRunner

    log: list = []

    def skip():
        raise SkipStage("no board here")

    skipper = _stage(tmp_path, "s", log)
    skipper.execute = skip
    res = StageRunner(tmp_path).run(
        [
            _stage(tmp_path, "opt", log, optional_note="qemu missing"),
            skipper,
            _stage(tmp_path, "after", log, up=("s",)),
            _stage(tmp_path, "ghost", log, up=("never",)),
        ]
    )
    got = [(x.id, x.status, x.note) for x in res]
    assert got == [
        ("opt", "skipped", "qemu missing"),
        ("s", "skipped", "no board here"),
        ("after", "skipped", "upstream s did not run"),
        ("ghost", "skipped", "upstream never did not run"),
    ]
    assert log == [] and not (tmp_path / "stages" / "s" / "stage.json").exists()


def test_stage_runner_missing_outputs(tmp_path):
    from robustedge.errors import RobustEdgeError
    from robustedge.recipe.runner import StageRunner

    log: list = []
    none = _stage(tmp_path, "n", log, files=lambda: [])
    with pytest.raises(RobustEdgeError, match="stage n finished without writing any file"):
        StageRunner(tmp_path).run([none])
    gone = _stage(tmp_path, "g", log, files=lambda: [tmp_path / "g" / "out.txt", tmp_path / "z"])
    with pytest.raises(RobustEdgeError, match=f"stage g finished without writing {tmp_path}/z"):
        StageRunner(tmp_path).run([gone])
    assert not (tmp_path / "stages" / "g" / "stage.json").exists()


def test_stage_runner_invalid_records_rerun(tmp_path):
    from robustedge.recipe.runner import StageRunner, input_hash

    log: list = []
    StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])
    rec_path = tmp_path / "stages" / "a" / "stage.json"
    rec = json.loads(rec_path.read_text())
    st = _stage(tmp_path, "a", log)
    assert StageRunner(tmp_path).valid_record(st, rec["input_hash"]) == rec["outputs"]
    assert StageRunner(tmp_path).valid_record(st, "other") is None
    assert rec["input_hash"] == input_hash(st, {})
    variants = [
        "{ broken",
        json.dumps({**rec, "outputs": {}}),
        json.dumps({k: v for k, v in rec.items() if k != "outputs"}),
        json.dumps({k: v for k, v in rec.items() if k != "input_hash"}),
        json.dumps({**rec, "outputs": 5}),
        json.dumps({**rec, "outputs": {"../../etc/passwd": "0" * 64}}),
        json.dumps({**rec, "outputs": {"a/out.txt": "0" * 64}}),
        json.dumps({**rec, "outputs": {"a/missing.txt": rec["outputs"]["a/out.txt"]}}),
    ]
    for i, text in enumerate(variants):
        rec_path.write_text(text)
        res = StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])
        assert res[0].status == "done", (i, text)
    assert log == ["a"] * (len(variants) + 1)
    assert StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])[0].status == "cached"


def test_input_hash_and_digest():
    from robustedge.recipe.runner import Stage, digest_of, input_hash

    def s(kind="k", config=None):
        return Stage("id", kind, config or {"a": 1, "b": 2}, lambda: None, lambda: [])

    h = input_hash(s(), {"u": "d"})
    assert h == input_hash(s(config={"b": 2, "a": 1}), {"u": "d"})
    assert h != input_hash(s(kind="other"), {"u": "d"})
    assert h != input_hash(s(config={"a": 1, "b": 3}), {"u": "d"})
    assert h != input_hash(s(), {"u": "e"}) and h != input_hash(s(), {})
    assert input_hash(s(config={"p": Path("x")}), {}) == input_hash(s(config={"p": "x"}), {})
    assert digest_of({"b": "2", "a": "1"}) == digest_of({"a": "1", "b": "2"})
    assert digest_of({"a": "1"}) != digest_of({"a": "2"}) and len(digest_of({})) == 64


def test_files_under(tmp_path):
    from robustedge.recipe.runner import files_under

    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("")
    (tmp_path / "d" / "sub" / "a.txt").write_text("")
    assert files_under(tmp_path / "d") == [tmp_path / "d" / "b.txt", tmp_path / "d/sub/a.txt"]
    assert files_under(tmp_path / "d", ["x", "b.txt"]) == [tmp_path / "d/x", tmp_path / "d/b.txt"]
    assert files_under(tmp_path / "none") == [] and files_under(tmp_path / "d", []) == []
    assert files_under(str(tmp_path / "d"), ["q"]) == [tmp_path / "d" / "q"]


def test_stage_runner_log_and_timing_fields(tmp_path, caplog):
    import logging
    import re
    import time

    from robustedge.recipe.runner import StageRunner

    log: list = []
    caplog.set_level(logging.INFO, logger="robustedge.recipe.runner")
    t0 = time.perf_counter()
    res = StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])
    elapsed = time.perf_counter() - t0
    assert 0.0 <= res[0].seconds <= elapsed  # the stage's own run time, inside the call's
    rec = json.loads((tmp_path / "stages" / "a" / "stage.json").read_text())
    assert rec["seconds"] == round(res[0].seconds, 3)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", rec["finished"])
    StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])
    (tmp_path / "a" / "out.txt").write_text("changed")
    StageRunner(tmp_path).run([_stage(tmp_path, "a", log)])
    msgs = [r.getMessage() for r in caplog.records if r.name == "robustedge.recipe.runner"]
    assert msgs == [
        "stage a: running",
        "stage a: cached",
        "stage a: output a/out.txt missing or changed",
        "stage a: running",
    ]
