"""Typed results of the API's stages: dataclasses with the fields of the JSON files.

Each result holds the location it was written to (``run``, ``out``, ...) and the fields of
the JSON file the stage wrote (``metrics.json``, ``eval.json``, ``export.json``, the bench
results, ``summary.json``), typed where every run has them. Keys a run may or may not have
(suites, corruptions, a budget's measurements, ...) stay in ``extra``; :meth:`JsonResult.to_json`
gives the file's mapping back, key for key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Type, TypeVar

__all__ = [
    "BenchResult",
    "BundleResult",
    "CompressResult",
    "EvalResult",
    "ExportResult",
    "JsonResult",
    "RecipeResult",
    "ReportResult",
    "TrainResult",
]

R = TypeVar("R", bound="JsonResult")


@dataclass(frozen=True)
class JsonResult:
    """Base of the results read from a JSON mapping: typed fields + ``extra`` for the rest."""

    # fields that say where the result lives, not keys of the JSON file
    LOCATION: ClassVar[Tuple[str, ...]] = ()

    @classmethod
    def from_json(cls: Type[R], data: Dict[str, Any], **location: Any) -> R:
        """The result of a stage's JSON mapping ``data`` (plus its location fields)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "keys", *cls.LOCATION}
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name in names
            and f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"{cls.__name__}: the JSON lacks {', '.join(missing)}")
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**location, **known, extra=extra, keys=tuple(data))  # type: ignore[call-arg]

    def to_json(self) -> Dict[str, Any]:
        """The JSON file's mapping again, key for key and in its order (typed fields and
        ``extra``; a typed field the file did not have is left out)."""
        values = vars(self)
        extra: Dict[str, Any] = values["extra"]
        return {k: extra[k] if k in extra else values[k] for k in values["keys"]}

    def robust_acc(self) -> Dict[str, float]:
        """Robust accuracy by attack label (``"pgd eps=0.1"``), from the ``robust`` list."""
        rows = getattr(self, "robust", None) or []
        return {f"{r['attack']} eps={r['eps']:g}": float(r["acc"]) for r in rows}


@dataclass(frozen=True)
class TrainResult(JsonResult):
    """`train`: the run folder and its ``metrics.json``. Under torchrun only rank 0 evaluates:
    on the other ranks (``rank > 0``) the accuracy fields are None."""

    LOCATION: ClassVar[Tuple[str, ...]] = ("run",)
    run: Path
    clean_acc: Optional[float] = None
    n: Optional[int] = None
    params: Optional[int] = None
    adversary: Optional[str] = None
    eps: Optional[float] = None
    steps: Optional[int] = None
    robust: List[Dict[str, Any]] = field(default_factory=list)
    history: List[Dict[str, Any]] = field(default_factory=list)
    kind: str = "train"
    rank: int = 0
    world_size: int = 1
    global_batch_size: Optional[int] = None
    batch_per_rank: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    keys: Tuple[str, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class CompressResult(JsonResult):
    """`compress`: the student run folder and its ``metrics.json`` (``extra["budget"]`` holds
    a budget's measurements when one was given). Under torchrun only rank 0 evaluates: on the
    other ranks (``rank > 0``) the accuracy fields are None."""

    LOCATION: ClassVar[Tuple[str, ...]] = ("run",)
    run: Path
    method: Optional[str] = None
    clean_acc: Optional[float] = None
    n: Optional[int] = None
    params: Optional[int] = None
    nonzero_params: Optional[int] = None
    sparsity: Dict[str, Any] = field(default_factory=dict)
    macs: Dict[str, Any] = field(default_factory=dict)
    teacher: Dict[str, Any] = field(default_factory=dict)
    robust: List[Dict[str, Any]] = field(default_factory=list)
    history: List[Dict[str, Any]] = field(default_factory=list)
    structured: bool = False
    target_sparsity: Optional[float] = None
    eps: Optional[float] = None
    seconds: Optional[float] = None
    kind: str = "compress"
    rank: int = 0
    world_size: int = 1
    global_batch_size: Optional[int] = None
    batch_per_rank: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    keys: Tuple[str, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class EvalResult(JsonResult):
    """`evaluate`: ``RUN/eval.json``."""

    LOCATION: ClassVar[Tuple[str, ...]] = ("path",)
    path: Path
    run: str
    data: str
    model: str
    seed: int
    clean_acc: float
    n: int
    robust: List[Dict[str, Any]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    keys: Tuple[str, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class ExportResult(JsonResult):
    """`export`: the export folder, ``export.json`` (``artifacts`` per format, each with its
    file, bytes and parity gate) and the size ledger (``ledger.json``)."""

    LOCATION: ClassVar[Tuple[str, ...]] = ("out", "ledger", "passed", "failures")
    out: Path
    ledger: Dict[str, Any]
    passed: bool
    failures: List[str]
    artifacts: Dict[str, Any]
    extra: Dict[str, Any] = field(default_factory=dict)
    keys: Tuple[str, ...] = field(default=(), repr=False, compare=False)

    def path(self, fmt: str) -> Path:
        """The file of format ``fmt`` (e.g. ``"tflite-int8"``)."""
        return self.out / str(self.artifacts[fmt]["file"])


@dataclass(frozen=True)
class BundleResult:
    """`bundle`: where it was written, the formats it holds (its manifest's order) and how
    many files its manifest lists (every file but the manifest; 0 for a .tar)."""

    path: Path
    formats: List[str]
    files: int


@dataclass(frozen=True)
class BenchResult(JsonResult):
    """`bench`: the board's results JSON (accuracy per evaluation set, robust rows, latency,
    sizes, board facts), tagged with the target."""

    LOCATION: ClassVar[Tuple[str, ...]] = ("path",)
    path: Optional[Path]
    accuracy: Dict[str, float]
    n_eval: Dict[str, int]
    robust: List[Dict[str, Any]] = field(default_factory=list)
    latency: Optional[Dict[str, Any]] = None
    target: Optional[str] = None
    backend: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    keys: Tuple[str, ...] = field(default=(), repr=False, compare=False)

    def robust_acc(self) -> Dict[str, float]:
        """On-board robust accuracy by label (Square rows carry their query count)."""
        out = {}
        for r in self.robust:
            label = r.get("name") or f"Square-{r.get('n_queries')}"
            out[f"{label} eps={r['eps']:g}"] = float(r["acc"])
        return out


@dataclass(frozen=True)
class RecipeResult(JsonResult):
    """`run_recipe`: the output folder and ``summary.json`` (runs and stage statuses)."""

    LOCATION: ClassVar[Tuple[str, ...]] = ("out",)
    out: Path
    recipe: str
    runs: List[Dict[str, Any]]
    stages: List[Dict[str, Any]]
    notes: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    keys: Tuple[str, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class ReportResult:
    """`report`: the HTML page, its Markdown twin and the summary lines."""

    html_path: Path
    md_path: Path
    summary: str
