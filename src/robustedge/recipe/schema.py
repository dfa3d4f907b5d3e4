"""The recipe: one YAML file describing data -> teacher -> compression sweep -> export -> boards.

Every part is a frozen dataclass that validates itself (`FieldError` names the key);
:func:`load_recipe` checks the whole file (unknown keys, types, ranges, impossible
combinations) before any work starts and reports the first problem on one line with its
line number, e.g. ``recipes/digits.yaml:14: compress[0].sparsity[1]: must lie in [0, 1)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from robustedge.device.bundle_format import BENCH_RUNS, BENCH_SQUARE_N, BENCH_SQUARE_QUERIES
from robustedge.errors import RobustEdgeError
from robustedge.export.config import ExportConfig
from robustedge.export.formats import ROOT, Family, board_choice, of_family
from robustedge.recipe.loader import (
    FieldError,
    Located,
    build,
    check_fields,
    check_keys,
    field_types,
    join,
    parse_yaml,
)
from robustedge.recipe.schema_evaluate import EvalSpec

# Recipe-level settings never repeated inside a stage.
TRAIN_EXCLUDED = ("data", "data_dir")
COMPRESS_EXCLUDED = ("teacher", "data", "data_dir", "sparsity")
EXPORT_EXCLUDED = ("seed",)  # the recipe's seed fills ExportConfig.seed
TFLITE = of_family(Family.TFLITE)
# What each emulated board can run (qemu-user userlands: robustedge.device.qemu.ARCHES; the
# full-system VMs carry the same interpreters: robustedge.device.vm).
QEMU_FORMATS = {
    "qemu-aarch64": ("onnx", "onnx-int8", *TFLITE),
    "qemu-armv7": TFLITE,
    "vm-aarch64": ("onnx", "onnx-int8", *TFLITE),
    "vm-armv7": TFLITE,
}


@dataclass(frozen=True)
class DataSpec:
    name: str = "digits"
    data_dir: Optional[str] = None

    def __post_init__(self) -> None:
        from robustedge.data import DATASETS

        if self.name not in DATASETS.names():
            raise FieldError("name", f"unknown data set '{self.name}' (known: {DATASETS.names()})")


@dataclass(frozen=True)
class TeacherSpec:
    """``train:`` TrainConfig fields (data comes from ``data:``), or ``load: RUN``."""

    train: Optional[Dict[str, Any]] = None
    load: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.train is None) == (self.load is None):
            raise ValueError("give exactly one of 'train' (a TrainConfig) or 'load' (a run folder)")


# ``budget:`` keys of a compress entry: one quantity (robustedge.compress.budget.Quantity), and
# the board a latency budget is measured on.
BUDGET_KEYS = ("macs", "flash_kb", "latency_ms", "target")


@dataclass(frozen=True)
class BudgetSpec:
    """``budget: {macs: 2M}`` / ``{flash_kb: 64}`` / ``{latency_ms: 2, target: local}``: what the
    board allows, in place of a sparsity (:class:`robustedge.compress.budget.Budget`)."""

    quantity: str
    limit: float
    target: Optional[str] = None

    def __post_init__(self) -> None:
        self.to_budget()  # ValueError, one line

    def to_budget(self) -> Any:
        from robustedge.compress.budget import Budget

        return Budget(self.quantity, self.limit, self.target)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        """The student's name suffix: ``macs2M``, ``flash64kb``, ``latency2ms-local``."""
        if self.quantity == "macs":
            return f"macs{_short(self.limit)}"
        if self.quantity == "flash_kb":
            return f"flash{self.limit:g}kb"
        return f"latency{self.limit:g}ms-{TargetSpec(self.target or 'local').slug}"


def _short(v: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


@dataclass(frozen=True)
class CompressSpec:
    """One compression setting: a list of sparsities makes a sweep (one student each); a
    ``budget`` instead makes one structured student that meets it."""

    name: str
    sparsity: Tuple[float, ...] = ()
    options: Dict[str, Any] = field(default_factory=dict)
    budget: Optional[BudgetSpec] = None

    def __post_init__(self) -> None:
        if self.budget is not None:
            if self.sparsity:
                raise FieldError("budget", "give either 'sparsity' or 'budget', not both")
            return
        if not self.sparsity:
            raise FieldError("sparsity", "give at least one sparsity target")
        for i, s in enumerate(self.sparsity):
            if not 0 <= s < 1:
                raise FieldError(f"sparsity[{i}]", f"sparsity must lie in [0, 1), got {s}")
        if len(set(self.sparsity)) != len(self.sparsity):
            raise FieldError("sparsity", "duplicate sparsity targets")

    def student_names(self) -> Tuple[str, ...]:
        if self.budget is not None:
            return (f"{self.name}-{self.budget.label}",)
        return tuple(f"{self.name}-s{s:g}" for s in self.sparsity)

    def student_sparsities(self) -> Tuple[Optional[float], ...]:
        """One per student: the sparsity target, or None for a budget (found by the search)."""
        return (None,) if self.budget is not None else self.sparsity


@dataclass(frozen=True)
class TargetSpec:
    """A board: ``local``, ``qemu-aarch64``, ``qemu-armv7``, ``vm-aarch64``, ``vm-armv7``,
    ``ssh://user@host`` or a path. ``square_queries`` / ``square_n`` override the ``devices:``
    Square settings for this board only (e.g. less on a slow emulated board; results below the
    default are labelled "weaker than default")."""

    SHORTHAND = "target"
    target: str
    optional: bool = False
    python: Optional[str] = None
    ssh_config: Optional[str] = None
    ssh_options: Tuple[str, ...] = ()
    square_queries: Optional[int] = None
    square_n: Optional[int] = None

    def __post_init__(self) -> None:
        t = self.target
        ok = t in ("local", *QEMU_FORMATS) or t.startswith(("ssh://", "/", "./", "../"))
        if not ok:
            raise FieldError(
                "target",
                f"unknown target '{t}' (local, qemu-aarch64, qemu-armv7, vm-aarch64, vm-armv7, "
                "ssh://user@host, a path)",
            )
        if (self.ssh_config or self.ssh_options) and not t.startswith("ssh://"):
            raise FieldError("ssh_config", "ssh settings given for a non-ssh target")
        if self.square_queries is not None and self.square_queries < 0:
            raise FieldError("square_queries", "need square_queries >= 0 (0 skips Square)")
        if self.square_n is not None and self.square_n < 1:
            raise FieldError("square_n", "need square_n >= 1")

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in self.target).strip("_")


@dataclass(frozen=True)
class DeviceSpec:
    targets: Tuple[TargetSpec, ...]
    format: Optional[str] = None
    runs: int = BENCH_RUNS
    threads: int = 1
    square_queries: int = BENCH_SQUARE_QUERIES
    square_n: Optional[int] = BENCH_SQUARE_N  # None: the bundle's whole evaluation set
    reference_kernels: bool = False
    backend: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.targets:
            raise FieldError("targets", "give at least one target")
        if self.runs != 0 and self.runs < 200:
            raise FieldError("runs", f"runs must be >= 200 (or 0 to skip timing), got {self.runs}")
        if self.threads < 1 or self.square_queries < 0:
            raise FieldError("threads", "need threads >= 1, square_queries >= 0")
        if self.square_n is not None and self.square_n < 1:
            raise FieldError("square_n", "need square_n >= 1 (or leave it out: all images)")
        slugs = [t.slug for t in self.targets]
        if len(set(slugs)) != len(slugs):
            raise FieldError("targets", "duplicate targets")


@dataclass(frozen=True)
class Recipe:
    name: str
    data: DataSpec
    teacher: TeacherSpec
    seed: int = 0
    evaluate: EvalSpec = field(default_factory=EvalSpec)
    compress: Tuple[CompressSpec, ...] = ()
    export: Optional[ExportConfig] = None
    devices: Optional[DeviceSpec] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def bench_format(self) -> str:
        """The format the boards run: ``devices.format``, else the exported format a board
        prefers (lowest ``board_rank`` in the FORMATS registry)."""
        if self.devices and self.devices.format:
            return self.devices.format
        return board_choice(self.export.made() if self.export else (ROOT,))

    def with_device(self, device: str) -> Recipe:
        """The same recipe with every training stage (teacher, students) on ``device``."""
        teacher = self.teacher
        if teacher.train is not None:
            teacher = replace(teacher, train={**teacher.train, "device": device})
        compress = tuple(replace(c, options={**c.options, "device": device}) for c in self.compress)
        return replace(self, teacher=teacher, compress=compress)

    def students(self) -> Tuple[Tuple[str, CompressSpec, Optional[float]], ...]:
        """(student name, its compress entry, its sparsity or None for a budget student)."""
        return tuple(
            (n, c, s)
            for c in self.compress
            for n, s in zip(c.student_names(), c.student_sparsities())
        )


TOP_KEYS = ("name", "seed", "data", "teacher", "evaluate", "compress", "export", "devices")


def load_recipe(path: Any) -> Recipe:
    """Read and fully validate a recipe file; one-line RecipeError on the first problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise RobustEdgeError(f"cannot read recipe {path}: {e.strerror}") from None
    return parse_recipe(text, str(path))


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    value, lines = parse_yaml(text, source)
    loc = Located(source, lines)
    raw = check_keys(value, TOP_KEYS, "", loc, "recipe")
    for key in ("name", "teacher"):
        if key not in raw:
            raise loc.error("", f"missing key '{key}'")
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise loc.error("name", "name must be a non-empty string")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise loc.error("seed", f"expected int, got {seed!r}")
    data = build(DataSpec, raw.get("data"), "data", loc)
    recipe = Recipe(
        name=raw["name"],
        seed=seed,
        data=data,
        teacher=_teacher(raw["teacher"], data, seed, loc),
        evaluate=build(EvalSpec, raw.get("evaluate"), "evaluate", loc),
        compress=_compress(raw.get("compress") or [], seed, loc),
        export=_export(raw.get("export"), seed, loc),
        devices=_optional(DeviceSpec, raw, "devices", loc),
    )
    _cross_check(recipe, loc)
    return recipe


def _optional(cls: Any, raw: Dict[str, Any], key: str, loc: Located) -> Any:
    """A section that may be absent (None); present but empty means all defaults."""
    return None if raw.get(key) is None else build(cls, raw[key], key, loc)


def _export(value: Any, seed: int, loc: Located) -> Optional[ExportConfig]:
    """``export:`` ExportConfig fields (seed from the recipe); absent or null: no export."""
    if value is None:
        return None
    types = field_types(ExportConfig, EXPORT_EXCLUDED)
    given = check_fields(value, types, "export", loc, "export (ExportConfig)")
    try:
        return ExportConfig(**given, seed=seed)
    except FieldError as e:
        raise loc.error(join("export", e.key), str(e)) from None
    except ValueError as e:
        raise loc.error("export", _msg(e)) from None


def _teacher(value: Any, data: DataSpec, seed: int, loc: Located) -> TeacherSpec:
    from robustedge.training.config import TrainConfig

    check_keys(value, ("train", "load"), "teacher", loc, "teacher")
    try:
        spec = TeacherSpec(train=value.get("train"), load=value.get("load"))
    except ValueError as e:
        raise loc.error("teacher", str(e)) from None
    if spec.load is not None:
        if not isinstance(spec.load, str):
            raise loc.error("teacher.load", "expected a run folder path")
        return spec
    types = field_types(TrainConfig, TRAIN_EXCLUDED)
    train = check_fields(spec.train, types, "teacher.train", loc, "teacher.train (TrainConfig)")
    train = {"seed": seed, **train, "data": data.name, "data_dir": data.data_dir}
    try:
        resolved = TrainConfig(**train).to_dict()
    except Exception as e:  # ValueError or an unknown registry name
        raise loc.error(_blame("teacher.train", train, str(e)), _msg(e)) from None
    return TeacherSpec(train=resolved)


def _compress(value: Any, seed: int, loc: Located) -> Tuple[CompressSpec, ...]:
    from robustedge.compress import CompressConfig

    if not isinstance(value, list):
        raise loc.error("compress", "expected a list of compression settings")
    types = field_types(CompressConfig, COMPRESS_EXCLUDED)
    out = []
    for i, item in enumerate(value):
        path = join("compress", i)
        check_keys(item, ("name", "sparsity", "budget", *types), path, loc, "compress entry")
        item = dict(item)
        if "sparsity" in item and "budget" in item:
            raise loc.error(join(path, "budget"), "give either 'sparsity' or 'budget', not both")
        if "budget" in item:
            budget = _budget(item.pop("budget"), join(path, "budget"), loc)
            name = item.pop("name", None)
            if name is not None and (not isinstance(name, str) or not name):
                raise loc.error(join(path, "name"), "name must be a non-empty string")
            opts = {"seed": seed, **check_fields(item, types, path, loc, "compress entry")}
            _check_budget_options(opts, path, loc)
            name = name or _default_name({**opts, "structured": True})
            out.append(CompressSpec(name=name, options=opts, budget=budget))
            continue
        if "sparsity" not in item:
            raise loc.error(
                path, "missing key 'sparsity' (a number or a list: a sweep) or 'budget'"
            )
        sp = build(
            CompressSpec,
            {"name": item.pop("name", "x"), "sparsity": item.pop("sparsity")},
            path,
            loc,
        )
        opts = {"seed": seed, **check_fields(item, types, path, loc, "compress entry")}
        name = sp.name if "name" in value[i] else _default_name(opts)
        for s in sp.sparsity:
            try:
                CompressConfig(teacher="teacher", sparsity=s, **opts)
            except Exception as e:
                raise loc.error(_blame(path, opts, str(e)), _msg(e)) from None
        out.append(CompressSpec(name=name, sparsity=sp.sparsity, options=opts))
    return tuple(out)


def _budget(value: Any, path: str, loc: Located) -> BudgetSpec:
    """``{macs: 2M}`` / ``{flash_kb: 64}`` / ``{latency_ms: 2, target: local}`` -> BudgetSpec."""
    from robustedge.compress.budget import Budget
    from robustedge.recipe.latency_probe import refuse_emulated

    if not isinstance(value, dict):
        raise loc.error(
            path, "expected a mapping: {macs: 2M}, {flash_kb: 64} or {latency_ms: 2, target: local}"
        )
    check_keys(value, BUDGET_KEYS, path, loc, "budget")
    given = [k for k in BUDGET_KEYS[:-1] if k in value]
    if len(given) != 1:
        raise loc.error(path, "give exactly one of macs, flash_kb, latency_ms")
    key = given[0]
    target = value.get("target")
    if target is not None:
        if not isinstance(target, str):
            raise loc.error(join(path, "target"), f"expected a target name, got {target!r}")
        try:
            TargetSpec(target=target)
            if key == "latency_ms":
                refuse_emulated(target)
        except (FieldError, RobustEdgeError) as e:
            raise loc.error(join(path, "target"), str(e)) from None
    raw = value[key]
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise loc.error(join(path, key), f"expected a number, got {raw!r}")
    try:
        b = Budget.parse(f"{key}={raw}", target)
    except ValueError as e:
        blame = "target" if "target" in str(e) and target is not None else key
        if "target" in str(e) and target is None:
            raise loc.error(
                path,
                "a latency budget is measured on a board: add 'target: local' (or ssh://user@host)",
            ) from None
        raise loc.error(join(path, blame), _msg(e)) from None
    return BudgetSpec(quantity=b.quantity.value, limit=b.limit, target=b.target)


def _check_budget_options(opts: Dict[str, Any], path: str, loc: Located) -> None:
    """A budget trains a structured student ranked per layer (prox or magnitude)."""
    from robustedge.compress import CompressConfig

    if opts.get("structured") is False:
        raise loc.error(join(path, "structured"), "a budget makes a structured student")
    if opts.get("scope") not in (None, "layer"):
        raise loc.error(join(path, "scope"), "a budget student ranks channels per layer")
    if opts.get("method", "prox") not in ("prox", "magnitude"):
        raise loc.error(
            join(path, "method"), "a budget trains a structured student: use prox or magnitude"
        )
    cfg = {**opts, "structured": True, "scope": "layer"}
    try:
        CompressConfig(teacher="teacher", sparsity=0.5, **cfg)
    except Exception as e:
        raise loc.error(_blame(path, opts, str(e)), _msg(e)) from None


def _default_name(opts: Dict[str, Any]) -> str:
    return str(opts.get("method", "prox")) + ("-structured" if opts.get("structured") else "")


def _blame(path: str, given: Dict[str, Any], message: str) -> str:
    """The given key a config error message names (longest match), else ``path``."""
    hits = [k for k in given if k.replace("_", " ") in message or k in message]
    return join(path, max(hits, key=len)) if hits else path


def _msg(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _cross_check(r: Recipe, loc: Located) -> None:
    """Combinations no single section can see."""
    names = [n for n, _, _ in r.students()]
    for i, c in enumerate(r.compress):
        for n in c.student_names():
            if names.count(n) > 1 or n == "teacher":
                raise loc.error(join("compress", i), f"student name '{n}' is not unique")
    if r.devices is None:
        return
    if r.export is None:
        raise loc.error("devices", "device targets need an 'export' section (formats to run)")
    made = r.export.made()
    if r.devices.format and r.devices.format not in made:
        raise loc.error(
            "devices.format",
            f"format '{r.devices.format}' is not exported (export.formats: {', '.join(made)})",
        )
    for i, t in enumerate(r.devices.targets):
        runnable = QEMU_FORMATS.get(t.target)
        if runnable is None:
            continue
        fmt = r.bench_format()
        if fmt not in runnable:
            raise loc.error(
                join(join("devices.targets", i), "target"),
                f"{t.target} cannot run {fmt} (it runs {', '.join(runnable)}): "
                "export a tflite format or set devices.format",
            )
