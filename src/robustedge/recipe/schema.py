"""The recipe: one YAML file describing data -> teacher -> compression sweep -> export -> boards.

Every part is a frozen dataclass that validates itself (`FieldError` names the key);
:func:`load_recipe` checks the whole file (unknown keys, types, ranges, impossible
combinations) before any work starts and reports the first problem on one line with its
line number, e.g. ``recipes/digits.yaml:14: compress[0].sparsity[1]: must lie in [0, 1)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from robustedge.config import default_of
from robustedge.device.board.config import BenchConfig
from robustedge.device.host.targets import target_class
from robustedge.errors import RobustEdgeError
from robustedge.export.config import ExportConfig
from robustedge.export.formats import ROOT, Family, board_choice, of_family
from robustedge.gates.spec import GatesSpec
from robustedge.recipe.gates_section import check_gates, first_line, parse_gates
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
from robustedge.training.evaluate import EvalPlan

# Recipe-level settings never repeated inside a stage.
TRAIN_EXCLUDED = ("data", "data_dir")
# (a compress entry's keys: CompressConfig's flat keys, its methods' options included)
COMPRESS_EXCLUDED = ("teacher", "data", "data_dir", "sparsity", "options")
EXPORT_EXCLUDED = ("seed",)  # the recipe's seed fills ExportConfig.seed
TFLITE = of_family(Family.TFLITE)


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


# the ``budget:`` key naming the board a latency budget is measured on; the other keys are the
# quantities (robustedge.compress.budget.Quantity), one of them per budget: budget_keys()
BUDGET_TARGET_KEY = "target"


def budget_keys() -> Tuple[str, ...]:
    """The ``budget:`` keys of a compress entry: the quantities, then the target."""
    from robustedge.compress.budget import Quantity

    return (*(q.value for q in Quantity), BUDGET_TARGET_KEY)


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
    """A board: a target of ``robustedge.device.host.targets.TARGETS`` (``local``,
    ``qemu-aarch64``, ``vm-armv7``, ..., ``ssh://user@host`` or a path). ``square_queries`` /
    ``square_n`` override the ``devices:`` Square settings for this board only (e.g. less on a
    slow emulated board; results below the default are labelled "weaker than default")."""

    SHORTHAND = "target"
    target: str
    optional: bool = False
    python: Optional[str] = None
    ssh_config: Optional[str] = None
    ssh_options: Tuple[str, ...] = ()
    square_queries: Optional[int] = None
    square_n: Optional[int] = None

    def __post_init__(self) -> None:
        try:
            kind = target_class(self.target)
        except RobustEdgeError as e:
            raise FieldError("target", str(e)) from None
        if (self.ssh_config or self.ssh_options) and not kind.ssh_settings:
            raise FieldError("ssh_config", "ssh settings given for a non-ssh target")
        self.bench(BenchConfig())  # the overrides are checked as bench settings

    def bench(self, base: BenchConfig) -> BenchConfig:
        """``base`` with this board's overrides."""
        keys = ("square_queries", "square_n")
        return replace(base, **{k: getattr(self, k) for k in keys if getattr(self, k) is not None})

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in self.target).strip("_")


@dataclass(frozen=True)
class DeviceSpec(BenchConfig):
    """The ``devices:`` section: the boards (``targets``) and every bench setting of
    :class:`~robustedge.device.board.config.BenchConfig` (its defaults, its checks), except
    ``emulated``, which each target sets itself."""

    targets: Tuple[TargetSpec, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.targets:
            raise FieldError("targets", "give at least one target")
        if self.emulated:
            raise FieldError("emulated", "emulated is set by each target, not by the recipe")
        slugs = [t.slug for t in self.targets]
        if len(set(slugs)) != len(slugs):
            raise FieldError("targets", "duplicate targets")

    def bench(self, target: TargetSpec) -> BenchConfig:
        """The BenchConfig one target runs: this section's settings with the target's own
        overrides (``format`` as given here; the recipe's :meth:`Recipe.bench_format` fills
        it in when absent)."""
        base = {f.name: getattr(self, f.name) for f in fields(BenchConfig)}
        return target.bench(BenchConfig(**base))


@dataclass(frozen=True)
class Recipe:
    name: str
    data: DataSpec
    teacher: TeacherSpec
    seed: int = 0
    evaluate: EvalPlan = field(default_factory=EvalPlan)
    compress: Tuple[CompressSpec, ...] = ()
    export: Optional[ExportConfig] = None
    devices: Optional[DeviceSpec] = None
    gates: Optional[GatesSpec] = None  # robustedge.gates: checked after the run

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


TOP_KEYS = ("name", "seed", "data", "teacher", "evaluate", "compress", "export", "devices", "gates")


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
        evaluate=build(EvalPlan, raw.get("evaluate"), "evaluate", loc),
        compress=_compress(raw.get("compress") or [], seed, loc),
        export=_export(raw.get("export"), seed, loc),
        devices=_optional(DeviceSpec, raw, "devices", loc),
        gates=parse_gates(raw.get("gates"), loc),
    )
    _cross_check(recipe, loc)
    check_gates(recipe, loc)
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
        raise loc.error("export", first_line(e)) from None


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
        raise loc.error(_blame("teacher.train", train, str(e)), first_line(e)) from None
    return TeacherSpec(train=resolved)


def _compress(value: Any, seed: int, loc: Located) -> Tuple[CompressSpec, ...]:
    """The ``compress:`` entries: each validated through CompressConfig (every sparsity)."""
    from robustedge.compress.config import flat_key_types

    if not isinstance(value, list):
        raise loc.error("compress", "expected a list of compression settings")
    types = {k: t for k, t in flat_key_types().items() if k not in COMPRESS_EXCLUDED}
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
            _check_compress(opts, s, path, loc)
        out.append(CompressSpec(name=name, sparsity=sp.sparsity, options=opts))
    return tuple(out)


def _check_compress(opts: Dict[str, Any], sparsity: float, path: str, loc: Located) -> None:
    """The entry's CompressConfig at ``sparsity`` (a refused key is blamed by name)."""
    from robustedge.compress import CompressConfig

    try:
        CompressConfig.from_keys(teacher="teacher", sparsity=sparsity, **opts)
    except FieldError as e:
        where = join(path, e.key) if e.key in opts else _blame(path, opts, str(e))
        raise loc.error(where, first_line(e)) from None
    except Exception as e:
        raise loc.error(_blame(path, opts, str(e)), first_line(e)) from None


def _budget(value: Any, path: str, loc: Located) -> BudgetSpec:
    """``{macs: 2M}`` / ``{flash_kb: 64}`` / ``{latency_ms: 2, target: local}`` -> BudgetSpec."""
    from robustedge.compress.budget import Budget, Quantity
    from robustedge.recipe.budget_measures import refuse_emulated

    if not isinstance(value, dict):
        raise loc.error(
            path, "expected a mapping: {macs: 2M}, {flash_kb: 64} or {latency_ms: 2, target: local}"
        )
    keys = budget_keys()
    check_keys(value, keys, path, loc, "budget")
    given = [k for k in keys if k in value and k != BUDGET_TARGET_KEY]
    if len(given) != 1:
        raise loc.error(path, f"give exactly one of {', '.join(q.value for q in Quantity)}")
    key = given[0]
    target = value.get(BUDGET_TARGET_KEY)
    if target is not None:
        where = join(path, BUDGET_TARGET_KEY)
        if not isinstance(target, str):
            raise loc.error(where, f"expected a target name, got {target!r}")
        try:
            TargetSpec(target=target)
            if key == Quantity.LATENCY_MS.value:
                refuse_emulated(target)
        except (FieldError, RobustEdgeError) as e:
            raise loc.error(where, str(e)) from None
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
        raise loc.error(join(path, blame), first_line(e)) from None
    return BudgetSpec(quantity=b.quantity.value, limit=b.limit, target=b.target)


def _check_budget_options(opts: Dict[str, Any], path: str, loc: Located) -> None:
    """A budget trains a structured student ranked per layer (prox or magnitude)."""
    from robustedge.compress import CompressConfig

    if opts.get("structured") is False:
        raise loc.error(join(path, "structured"), "a budget makes a structured student")
    if opts.get("scope") not in (None, "layer"):
        raise loc.error(join(path, "scope"), "a budget student ranks channels per layer")
    from robustedge.compress.config import PRUNERS

    method = opts.get("method", default_of(CompressConfig, "method"))
    able = [m for m, p in PRUNERS.items() if p.structured]
    if method not in able:
        raise loc.error(
            join(path, "method"),
            f"a budget trains a structured student: use {' or '.join(able)}",
        )
    cfg = {**opts, "structured": True, "scope": "layer"}
    try:
        CompressConfig.from_keys(teacher="teacher", sparsity=0.5, **cfg)
    except Exception as e:
        raise loc.error(_blame(path, opts, str(e)), first_line(e)) from None


def _default_name(opts: Dict[str, Any]) -> str:
    """``prox``, ``magnitude-structured``, ...: the method (CompressConfig's default if not
    given), and whether it prunes channels."""
    from robustedge.compress import CompressConfig

    method = opts.get("method", default_of(CompressConfig, "method"))
    return str(method) + ("-structured" if opts.get("structured") else "")


def _blame(path: str, given: Dict[str, Any], message: str) -> str:
    """The given key a config error message names (longest match), else ``path``."""
    hits = [k for k in given if k.replace("_", " ") in message or k in message]
    return join(path, max(hits, key=len)) if hits else path


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
    fmt = r.bench_format()
    for i, t in enumerate(r.devices.targets):
        runnable = target_class(t.target).formats()
        if fmt not in runnable:
            raise loc.error(
                join(join("devices.targets", i), "target"),
                f"{t.target} cannot run {fmt} (it runs {', '.join(runnable)}): "
                "export a format it runs or set devices.format",
            )
