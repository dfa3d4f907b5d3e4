"""Gather the JSON files of run folders into plain rows (no torch, no live objects).

A path given to the report may be a recipe output folder (``summary.json``), a run folder
(``model.json``), or a folder holding run folders. Per run: ``metrics.json`` (+ ``eval.json``),
``export/export.json`` + ``export/ledger.json`` and ``device/*/results.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from robustedge.errors import RobustEdgeError
from robustedge.io import safe_path

logger = logging.getLogger(__name__)


@dataclass
class RunInfo:
    """What the report knows about one model (all read from JSON)."""

    name: str
    path: Path
    role: str  # teacher | student
    method: str  # "teacher" for the dense teacher
    structured: bool
    sparsity: float
    clean: Optional[float]
    accuracy: Dict[str, float] = field(default_factory=dict)  # "pgd eps=0.1" -> acc
    corruptions: Optional[float] = None
    params: Optional[int] = None
    nonzero: Optional[int] = None
    macs: Optional[int] = None
    export: Dict[str, Any] = field(default_factory=dict)  # format -> artifact entry
    ledger: List[Dict[str, Any]] = field(default_factory=list)
    devices: List[Dict[str, Any]] = field(default_factory=list)  # results.json contents

    @property
    def family(self) -> str:
        """Line in the trade-off plot: method (+ structured)."""
        return self.method + (" (structured)" if self.structured else "")


def _read(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RobustEdgeError(f"corrupt JSON in {path}: {e}") from None


def attack_key(entry: Dict[str, Any]) -> str:
    """``pgd eps=0.1`` / ``square eps=0.1`` / ``onmanifold eta=0.3``."""
    budget = "eta" if entry.get("attack") == "onmanifold" else "eps"
    return f"{entry['attack']} {budget}={entry['eps']:g}"


def load_run(path: Path, name: Optional[str] = None, meta: Optional[Dict] = None) -> RunInfo:
    """One run folder -> RunInfo (``meta`` from a recipe summary fills role/method)."""
    path = Path(path)
    metrics = _read(path / "metrics.json")
    if metrics is None:
        raise RobustEdgeError(f"{path}: no metrics.json (not a finished run folder)")
    meta = meta or {}
    student = metrics.get("kind") == "compress"
    sp = _sparsity(metrics) if student else 0.0
    info = RunInfo(
        name=name or path.name,
        path=path,
        role=meta.get("role", "student" if student else "teacher"),
        method=metrics.get("method", "teacher") if student else "teacher",
        structured=bool(metrics.get("structured", False)),
        sparsity=float(sp),
        clean=metrics.get("clean_acc"),
        params=metrics.get("params"),
        nonzero=metrics.get("nonzero_params"),
        macs=(metrics.get("macs") or {}).get("nonzero") if student else None,
    )
    _merge_accuracy(info, metrics, _read(path / "eval.json"))
    export = _read(path / "export" / "export.json") or {}
    info.export = export.get("artifacts", {})
    info.ledger = (_read(path / "export" / "ledger.json") or {}).get("stages", [])
    if info.macs is None and info.ledger:
        info.macs = info.ledger[0].get("macs")
    for res in sorted((path / "device").glob("*/results.json")):
        data = _read(res)
        if data:
            info.devices.append(data)
    return info


def _sparsity(metrics: Dict[str, Any]) -> float:
    """Fraction of prunable weights that are zero; for a structured (shrunk) student, whose
    remaining weights are dense, the fraction of the teacher's weights removed."""
    if metrics.get("structured"):
        teacher = (metrics.get("teacher") or {}).get("params")
        kept = metrics.get("nonzero_params")
        if teacher and kept is not None:
            return 1.0 - kept / teacher
    return float(metrics.get("sparsity", {}).get("global", 0.0))


def _merge_accuracy(info: RunInfo, metrics: Dict, evaluation: Optional[Dict]) -> None:
    for src in (metrics, evaluation or {}):
        for entry in src.get("robust", []):
            info.accuracy[attack_key(entry)] = float(entry["acc"])
    if evaluation and "corruptions" in evaluation:
        info.corruptions = float(evaluation["corruptions"]["mean"])


def find_runs(paths: Sequence[Path]) -> List[RunInfo]:
    """Every run under ``paths`` (recipe folders, run folders, or parents of run folders)."""
    runs: List[RunInfo] = []
    for p in map(Path, paths):
        if not p.exists():
            raise RobustEdgeError(f"no such run or folder: {p}")
        summary = _read(p / "summary.json") if p.is_dir() else None
        if summary and "runs" in summary:
            for r in summary["runs"]:  # run paths stay inside the recipe folder
                rel = r.get("path") if isinstance(r, dict) else None
                run_dir = safe_path(p, rel, f"{p / 'summary.json'}: run path")
                if (run_dir / "metrics.json").is_file():
                    runs.append(load_run(run_dir, r["name"], r))
        elif (p / "model.json").is_file():
            runs.append(load_run(p))
        else:
            found = sorted(
                m.parent for m in p.rglob("metrics.json") if (m.parent / "model.json").is_file()
            )
            runs += [load_run(r, str(r.relative_to(p))) for r in found]
    if not runs:
        raise RobustEdgeError(f"no run folders (model.json + metrics.json) under {list(paths)}")
    return runs


def recipe_notes(paths: Sequence[Path]) -> List[str]:
    """Notes recorded by `robustedge run` (e.g. optional targets skipped)."""
    notes: List[str] = []
    for p in map(Path, paths):
        s = _read(p / "summary.json") if p.is_dir() else None
        notes += (s or {}).get("notes", [])
        for r in (s or {}).get("runs", []):
            if not (p / r["path"] / "metrics.json").is_file():
                notes.append(f"{r['name']}: not finished (no {r['path']}/metrics.json), left out")
    return list(dict.fromkeys(notes))


def robust_key(runs: Sequence[RunInfo]) -> Optional[str]:
    """The headline robust metric: PGD at the smallest eps all runs share, else any."""
    keys = [k for k in runs[0].accuracy if all(k in r.accuracy for r in runs)] if runs else []
    pgd = sorted((k for k in keys if k.startswith("pgd ")), key=lambda k: float(k.split("=")[1]))
    return pgd[0] if pgd else (keys[0] if keys else None)
