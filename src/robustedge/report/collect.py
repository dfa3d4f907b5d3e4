"""Gather the JSON files of run folders into plain rows (no torch, no live objects).

A path given to the report may be a recipe output folder (``summary.json``), a run folder
(``model.json``), or a folder holding run folders. Per run: ``metrics.json`` (+ ``eval.json``),
``export/export.json`` + ``export/ledger.json`` and ``device/*/results.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from robustedge import jsonsafe
from robustedge.attacks import budget_name
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
    # "worst-case eps=0.1" -> that suite's result (label, attacks, per_attack, worst_case_acc, n);
    # its worst-case accuracy is also in ``accuracy`` under the same key
    suites: Dict[str, Dict[str, Any]] = field(default_factory=dict)
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
        return jsonsafe.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RobustEdgeError(f"corrupt JSON in {path}: {e}") from None


def attack_key(entry: Dict[str, Any]) -> str:
    """``pgd eps=0.1`` / ``square eps=0.1`` / ``onmanifold eta=0.3`` (the budget's name is
    the attack's: :func:`robustedge.attacks.budget_name`)."""
    return f"{entry['attack']} {budget_name(str(entry['attack']))}={entry['eps']:g}"


def suite_key(entry: Dict[str, Any]) -> str:
    """``worst-case eps=0.1``: a suite result's column (its attacks are in its label)."""
    eps = entry["eps"] if "eps" in entry else entry["attacks"][0]["eps"]
    return f"{entry['suite']} eps={float(eps):g}"


def suite_label(entry: Dict[str, Any]) -> str:
    """``worst case of PGD-20x5, APGD-CE-100, ...`` (from the attacks' names when a result
    carries no label)."""
    if entry.get("label"):
        return str(entry["label"])
    return "worst case of " + ", ".join(
        str(a.get("name", a.get("attack"))) for a in entry["attacks"]
    )


@dataclass(frozen=True)
class Headline:
    """A model's headline robust figure and what it is: the worst case per image over a named
    suite, else the strongest (lowest) single attack the model was evaluated with."""

    key: str  # accuracy key: "worst-case eps=0.1" or "pgd eps=0.1"
    acc: float
    label: str  # names the suite and its attacks, or the single attack
    is_suite: bool


def _eps_of(key: str) -> Optional[float]:
    name, _, budget = key.partition(" eps=")
    return float(budget) if budget and name else None


def headline(run: RunInfo) -> Optional[Headline]:
    """The model's headline robust accuracy at the smallest eps it has: its worst-case suite
    figure (the lowest when several suites ran), else its strongest single attack; None when
    the model has no robust figure. On-manifold (eta) rows are another threat model: left out."""
    if run.suites:
        eps = min(_eps_of(k) for k in run.suites)
        key = min((k for k in run.suites if _eps_of(k) == eps), key=lambda k: run.accuracy[k])
        entry = run.suites[key]
        label = f"{entry['suite']}: {suite_label(entry)} (eps={eps:g}, n={entry.get('n', '?')})"
        return Headline(key, run.accuracy[key], label, True)
    single = [k for k in run.accuracy if _eps_of(k) is not None]
    if not single:
        return None
    eps = min(_eps_of(k) for k in single)
    key = min((k for k in single if _eps_of(k) == eps), key=lambda k: (run.accuracy[k], k))
    label = f"{key} (strongest single attack; no suite run)"
    return Headline(key, run.accuracy[key], label, False)


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
        for entry in src.get("suites", []):
            try:
                key = suite_key(entry)
                info.accuracy[key] = float(entry["worst_case_acc"])
                suite_label(entry)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                raise RobustEdgeError(f"{info.path}: malformed suite result ({e!r})") from None
            info.suites[key] = entry
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


# The board metrics (all lower is better): results.json key, label, unit, and the relative margin
# a student must beat the teacher by to count (flash bytes are exact; latency and peak RSS carry
# run-to-run noise, so a difference inside it is not called a win).
BOARD_METRICS = (
    ("flash_bytes", "flash bytes", "B", 0.0),
    ("p50_ms", "p50 latency", "ms", 0.05),
    ("peak_rss_mb", "peak RSS", "MiB", 0.02),
)


def board_value(d: Dict[str, Any], key: str) -> Optional[float]:
    """A board metric of one results.json: flash bytes (the stored file; results written before
    compressed bundles stored the model itself), p50 latency, peak RSS."""
    if key == "flash_bytes":
        v = d.get("flash_bytes", d.get("model_bytes"))
    elif key == "p50_ms":
        v = (d.get("latency") or {}).get("p50_ms")
    else:
        v = d.get(key)
    return None if v is None else float(v)


@dataclass(frozen=True)
class Win:
    """A student that beats the teacher on one board metric (same target, same format)."""

    student: str
    target: str
    format: str
    metric: str  # a BOARD_METRICS key
    student_value: float
    teacher_value: float

    @property
    def change(self) -> float:
        """Relative change vs the teacher (negative: smaller/faster)."""
        return self.student_value / self.teacher_value - 1.0


def teacher_of(runs: Sequence[RunInfo]) -> Optional[RunInfo]:
    """The dense teacher among ``runs`` (the first one when several are given)."""
    return next((r for r in runs if r.role == "teacher"), None)


def device_label(d: Dict[str, Any]) -> str:
    return f"{d.get('target', '?')}" + (" (EMULATED)" if d.get("emulated") else "")


def teacher_wins(runs: Sequence[RunInfo]) -> List[Win]:
    """Every (student, target, format, metric) where the student's board measurement beats the
    teacher's on the same target and format by more than the metric's noise margin (flash
    bytes only between bundles that store the model the same way: same codec)."""
    teacher = teacher_of(runs)
    if teacher is None:
        return []
    ref = {(device_label(d), d.get("format")): d for d in teacher.devices}
    wins: List[Win] = []
    for r in runs:
        if r is teacher or r.role == "teacher":
            continue
        for d in r.devices:
            t = ref.get((device_label(d), d.get("format")))
            if t is None:
                continue
            for key, _label, _unit, margin in BOARD_METRICS:
                if key == "flash_bytes" and d.get("codec") != t.get("codec"):
                    continue  # stored differently (e.g. a cached plain teacher bundle)
                mine, theirs = board_value(d, key), board_value(t, key)
                if mine is not None and theirs and mine < theirs * (1.0 - margin):
                    wins.append(
                        Win(r.name, device_label(d), d.get("format", "?"), key, mine, theirs)
                    )
    return wins


def headline_pgd(runs: Sequence[RunInfo]) -> Optional[str]:
    """A worst-case suite figure every run has (``shared_suite_key``), else ``pgd eps=0.1``
    when every run has it (the issue's headline robust metric), else the smallest shared PGD
    eps (``robust_key``)."""
    suite = shared_suite_key(runs)
    if suite:
        return suite
    if runs and all("pgd eps=0.1" in r.accuracy for r in runs):
        return "pgd eps=0.1"
    return robust_key(runs)


def shared_suite_key(runs: Sequence[RunInfo]) -> Optional[str]:
    """A suite result every run has, at the smallest eps (the lowest figure on a tie)."""
    keys = [k for k in runs[0].suites if all(k in r.suites for r in runs)] if runs else []
    if not keys:
        return None
    return min(keys, key=lambda k: (_eps_of(k), sum(r.accuracy[k] for r in runs), k))


def robust_key(runs: Sequence[RunInfo]) -> Optional[str]:
    """The shared robust metric of the figures: a worst-case suite all runs have, else PGD at
    the smallest eps all runs share, else any."""
    suite = shared_suite_key(runs)
    if suite:
        return suite
    keys = [k for k in runs[0].accuracy if all(k in r.accuracy for r in runs)] if runs else []
    pgd = sorted((k for k in keys if k.startswith("pgd ")), key=lambda k: float(k.split("=")[1]))
    return pgd[0] if pgd else (keys[0] if keys else None)
