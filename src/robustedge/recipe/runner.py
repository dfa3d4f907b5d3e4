"""Run a recipe as a chain of cached stages.

A stage has an id, a config (plain JSON data), upstream stages and output files. Its input
hash is sha256 over (kind, config, the output digests of its upstream stages). When a stage
finishes, ``OUT/stages/<id>/stage.json`` records that hash and the sha256 of every output
file. A later run skips the stage when the record exists, the input hash is unchanged and
every output file is present with the recorded sha256; otherwise the stage is redone (and,
as its outputs change, so is everything downstream). The record is deleted before a stage
starts and written last, so a crash never leaves a stage looking complete.

:meth:`StageRunner.prepare` (cache check) and :meth:`StageRunner.finish` (hash the outputs,
write the record) run in the driving process; only ``stage.execute`` may run elsewhere, so
every executor (:mod:`robustedge.recipe.executors`: in order here, or as Ray tasks) writes the
same records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from robustedge import jsonsafe
from robustedge.errors import RobustEdgeError
from robustedge.hashing import sha256_file as file_sha256
from robustedge.io import safe_path, write_json

logger = logging.getLogger(__name__)
STAGE_FILE = "stage.json"
SCHEMA = "robustedge.recipe.stage/1"


class SkipStage(Exception):
    """Raised by an optional stage that cannot run here (recorded as skipped, with a note)."""


@dataclass
class Stage:
    """One unit of work. ``outputs(root)`` lists its files (relative to ``root``) once done."""

    id: str
    kind: str
    config: Dict[str, Any]
    execute: Callable[[], None]
    outputs: Callable[[], List[Path]]
    upstream: Sequence[str] = ()
    optional_note: Optional[str] = None  # set: the stage is skipped with this note
    lock: Optional[str] = None  # stages sharing a lock never run at once (e.g. one board)


@dataclass
class StageResult:
    id: str
    status: str  # "done" | "cached" | "skipped"
    seconds: float = 0.0
    note: str = ""
    digest: str = ""
    outputs: Dict[str, str] = field(default_factory=dict)


def digest_of(outputs: Dict[str, str]) -> str:
    """One hash for a stage's outputs (sorted relative path + sha256 pairs)."""
    return hashlib.sha256(json.dumps(sorted(outputs.items())).encode()).hexdigest()


def input_hash(stage: Stage, upstream: Dict[str, str]) -> str:
    blob = {"kind": stage.kind, "config": stage.config, "upstream": upstream}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


class StageRunner:
    """Executes stages in order under ``root``, skipping the ones that are still valid."""

    def __init__(
        self,
        root: Path,
        on_result: Optional[Callable[[StageResult], None]] = None,
        on_start: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.root = Path(root)
        self.on_result, self.on_start = on_result, on_start
        self.results: Dict[str, StageResult] = {}

    def record_path(self, stage_id: str) -> Path:
        return self.root / "stages" / stage_id / STAGE_FILE

    def run(self, stages: Sequence[Stage]) -> List[StageResult]:
        """Run ``stages`` one after the other in this process."""
        for stage in stages:
            ready = self.prepare(stage)
            if isinstance(ready, StageResult):
                self.add(ready)
                continue
            t0 = time.perf_counter()
            try:
                stage.execute()
            except SkipStage as e:
                self.add(StageResult(stage.id, "skipped", note=str(e)))
                continue
            self.add(self.finish(stage, ready, time.perf_counter() - t0))
        return list(self.results.values())

    def add(self, result: StageResult) -> None:
        """Record a stage's result (and report it)."""
        self.results[result.id] = result
        if self.on_result:
            self.on_result(result)

    def prepare(self, stage: Stage) -> Union[StageResult, Tuple[str, Dict[str, str]]]:
        """A result when ``stage`` need not run (skipped, or cached and valid); else its
        (input hash, upstream digests), with its old record removed and ``on_start`` called.
        Its upstream stages must have results already."""
        missing = [
            u for u in stage.upstream if self.results.get(u, StageResult(u, "?")).digest == ""
        ]
        if missing:
            return StageResult(stage.id, "skipped", note=f"upstream {missing[0]} did not run")
        if stage.optional_note is not None:
            return StageResult(stage.id, "skipped", note=stage.optional_note)
        ups = {u: self.results[u].digest for u in stage.upstream}
        want = input_hash(stage, ups)
        cached = self.valid_record(stage, want)
        if cached is not None:
            logger.info("stage %s: cached", stage.id)
            return StageResult(stage.id, "cached", digest=digest_of(cached), outputs=cached)
        self.record_path(stage.id).unlink(missing_ok=True)
        logger.info("stage %s: running", stage.id)
        if self.on_start:
            self.on_start(stage.id)
        return want, ups

    def finish(
        self, stage: Stage, ready: Tuple[str, Dict[str, str]], seconds: float
    ) -> StageResult:
        """Hash a finished stage's outputs and write its record (last)."""
        want, ups = ready
        outputs = self._hash_outputs(stage)
        write_json(
            self.record_path(stage.id),
            {
                "schema": SCHEMA,
                "id": stage.id,
                "kind": stage.kind,
                "input_hash": want,
                "config": stage.config,
                "upstream": ups,
                "outputs": outputs,
                "seconds": round(seconds, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        return StageResult(stage.id, "done", seconds, digest=digest_of(outputs), outputs=outputs)

    def _hash_outputs(self, stage: Stage) -> Dict[str, str]:
        files = stage.outputs()
        absent = [p for p in files if not p.is_file()]
        if not files or absent:
            what = absent[0] if absent else "any file"
            raise RobustEdgeError(f"stage {stage.id} finished without writing {what}")
        return {p.relative_to(self.root).as_posix(): file_sha256(p) for p in sorted(files)}

    def valid_record(self, stage: Stage, want: str) -> Optional[Dict[str, str]]:
        """The recorded outputs when the stage is complete, valid and up to date, else None."""
        path = self.record_path(stage.id)
        try:
            rec = jsonsafe.loads(path.read_text())
            outputs = dict(rec["outputs"])
            same = rec["input_hash"] == want
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not same or not outputs:
            return None
        for rel, sha in outputs.items():
            try:
                p = safe_path(self.root, rel, f"{path}: output")  # never outside OUT
            except RobustEdgeError:
                return None
            if not p.is_file() or file_sha256(p) != sha:
                logger.info("stage %s: output %s missing or changed", stage.id, rel)
                return None
        return outputs


def files_under(folder: Path, names: Optional[Sequence[str]] = None) -> List[Path]:
    """The named files of ``folder`` (all files below it when ``names`` is None)."""
    folder = Path(folder)
    if names is not None:
        return [folder / n for n in names]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file())
