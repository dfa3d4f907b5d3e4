"""Read what ``robustedge check`` gates: one :class:`Subject` per model x target (x format).

A path may be a board results JSON file (``robustedge bench --out``), a folder of such files,
a bundle folder (``manifest.json``), a run folder, or a recipe output folder (``summary.json``;
its ``recipe.json`` may carry ``gates:``). Run folders give a ``host`` subject (PyTorch
evaluation, export ledger and parity) and one ``board`` subject per ``device/*/results.json``.
Files are read with the nesting-limited JSON reader; paths named inside a recipe folder stay
inside it (:func:`robustedge.report.collect.find_runs`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from robustedge import jsonsafe
from robustedge.errors import RobustEdgeError
from robustedge.gates.expr import GateError
from robustedge.gates.metrics import METRICS, Measured, Source

logger = logging.getLogger(__name__)

HOST = "host"  # the target name of PyTorch / export measurements
BUNDLE = "bundle"  # the target name of a bundle's manifest figures
RESULTS_SCHEMA = "robustedge.device.results/"
MAX_BYTES = 50 * 1024 * 1024  # a results file larger than this is not one


@dataclass
class Subject:
    """One model on one target: its measured metrics and, for board results, the per-image
    outcomes a paired regression test needs."""

    model: str
    target: str
    kind: str  # board | host | bundle
    source: str
    format: Optional[str] = None
    role: str = ""
    emulated: bool = False
    group: str = ""  # the input it came from (teacher ratios stay inside one run)
    values: Dict[str, Measured] = field(default_factory=dict)
    outcomes: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        """What a baseline subject is matched on."""
        return (self.model, self.target, self.format)

    @property
    def where(self) -> str:
        """``prox-s0.5 @ qemu-aarch64 (EMULATED)``: model and target for one-line messages."""
        return f"{self.model} @ {self.target}" + (" (EMULATED)" if self.emulated else "")


def read_json_file(path: Path, what: str) -> Any:
    """A JSON file as data; GateError (exit 2) when missing, too large or not JSON."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise GateError(f"{path}: too large for a {what} ({path.stat().st_size} bytes)")
        return jsonsafe.loads(path.read_text())
    except FileNotFoundError:
        raise GateError(f"no such {what}: {path}") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise GateError(f"{path}: not a readable {what} ({e})") from None


def is_results(data: Any) -> bool:
    """Whether ``data`` is a board results object (schema, or the fields every one has)."""
    if not isinstance(data, dict):
        return False
    schema = data.get("schema")
    if isinstance(schema, str):
        return schema.startswith(RESULTS_SCHEMA)
    return isinstance(data.get("accuracy"), dict) and "board" in data


def fill(subject: Subject, src: Source) -> Subject:
    """Read every registered metric this source holds into ``subject.values``."""
    for name, metric in METRICS.items():
        try:
            got = metric.extract(src)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise GateError(f"{subject.source}: malformed {name} ({e!r})") from None
        if got is not None:
            subject.values[name] = got
    return subject


def board_subject(
    data: Dict[str, Any], source: str, model: str, group: str, run: Any = None
) -> Subject:
    """A board results object -> Subject (model name given by the caller)."""
    target = str(data.get("target") or "board")
    s = Subject(
        model=model,
        target=target,
        kind="board",
        source=source,
        format=data.get("format"),
        role=getattr(run, "role", "") or "",
        emulated=bool(data.get("emulated")) or emulated_target(target),
        group=group,
    )
    outcomes = data.get("outcomes")
    if isinstance(outcomes, dict):
        s.outcomes = dict(outcomes)
        wc = data.get("worst_case") or {}
        s.outcomes["n"] = {**dict(data.get("n_eval") or {}), "robust": wc.get("n")}
    return fill(s, Source("board", results=data, run=run, format=s.format))


def emulated_target(target: str) -> bool:
    """Whether the TARGETS registry marks ``target`` as emulated (unknown names: False)."""
    from robustedge.device.host.targets import target_class

    try:
        return bool(target_class(target).emulated)
    except RobustEdgeError:
        return False


def results_model(data: Dict[str, Any], path: Path) -> str:
    """A results file's model: its ``run`` (set by recipes), the bundle's run folder name, or
    the file's name."""
    if isinstance(data.get("run"), str) and data["run"]:
        return Path(data["run"]).name
    run = (data.get("bundle") or {}).get("run") if isinstance(data.get("bundle"), dict) else None
    if isinstance(run, str) and run:
        return Path(run).name
    return path.stem


def from_results_file(path: Path, group: str) -> Subject:
    data = read_json_file(path, "results file")
    if not is_results(data):
        raise GateError(f"{path}: not a robustedge board results file")
    return board_subject(data, str(path), results_model(data, path), group)


def from_bundle(path: Path) -> List[Subject]:
    """A bundle folder: one subject per format it holds (sizes, the export's parity)."""
    from robustedge.device.board.bundle_format import MANIFEST

    m = read_json_file(path / MANIFEST, "bundle manifest")
    if not isinstance(m, dict) or not isinstance(m.get("formats"), dict):
        raise GateError(f"{path}: not a robustedge bundle (no formats in its manifest)")
    model = Path(str(m.get("run") or path.name)).name
    out = []
    for fmt in m["formats"]:
        s = Subject(model, BUNDLE, "bundle", str(path), format=fmt, group=str(path))
        out.append(fill(s, Source("bundle", manifest=m, format=fmt)))
    return out


def from_run(run: Any, group: str) -> List[Subject]:
    """A run folder (report.collect.RunInfo): the host subject and its board results."""
    from robustedge.export.formats import board_choice

    fmt = board_choice(list(run.export)) if run.export else None
    host = Subject(run.name, HOST, "host", str(run.path), fmt, run.role, group=group)
    out = [fill(host, Source("host", run=run, format=fmt))]
    for d in run.devices:
        if is_results(d):
            where = str(run.path / "device" / str(d.get("target", "?")))
            out.append(board_subject(d, where, run.name, group, run))
    return out


def collect(paths: Sequence[Any]) -> List[Subject]:
    """Every subject under ``paths`` (see the module doc); GateError for a missing path or a
    folder that holds nothing to gate."""
    subjects: List[Subject] = []
    for p in map(Path, paths):
        subjects += _collect_one(p)
    compute_relative(subjects)
    return subjects


def _collect_one(p: Path) -> List[Subject]:
    from robustedge.device.board.bundle_format import MANIFEST
    from robustedge.report.collect import find_runs

    if not p.exists():
        raise GateError(f"no such results file or folder: {p}")
    if p.is_file():
        return [from_results_file(p, "files")]
    if (p / MANIFEST).is_file():
        return from_bundle(p)
    files = sorted(f for f in p.glob("*.json") if f.name not in ("summary.json", "recipe.json"))
    if not (p / "summary.json").is_file() and not (p / "model.json").is_file():
        found = [f for f in files if is_results(read_json_file(f, "results file"))]
        if found and not any(p.rglob("model.json")):
            return [from_results_file(f, str(p)) for f in found]
    try:
        runs = find_runs([p])
    except RobustEdgeError as e:
        raise GateError(f"{p}: nothing to check ({e})") from None
    return [s for run in runs for s in from_run(run, str(p))]


def teacher_for(s: Subject, subjects: Sequence[Subject]) -> Optional[Subject]:
    """The teacher's board subject on ``s``'s target and format in ``s``'s run (role teacher,
    or a model named ``teacher`` among loose results files)."""
    for t in subjects:
        if t.kind != "board" or (t.target, t.format, t.group) != (s.target, s.format, s.group):
            continue
        if t.role == "teacher" or (not t.role and t.model == "teacher"):
            return t
    return None


def compute_relative(subjects: Sequence[Subject]) -> None:
    """``p50_vs_teacher`` for every board subject whose run has the teacher on its target."""
    for s in subjects:
        t = teacher_for(s, subjects) if s.kind == "board" else None
        mine, theirs = s.values.get("p50_ms"), (t.values.get("p50_ms") if t else None)
        if mine is None or theirs is None or not theirs.value:
            continue
        ratio = float(mine.value) / float(theirs.value)
        label = f"p50 {float(mine.value):.4g} ms / teacher's {float(theirs.value):.4g} ms"
        s.values["p50_vs_teacher"] = Measured(round(ratio, 4), label)
