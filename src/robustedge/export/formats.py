"""The export formats: one small descriptor per format in the ``FORMATS`` registry.

``FORMATS`` is the only list of format names. A descriptor says which file the format writes,
which interpreter runs it (the host's parity check and the board alike), whether it is int8,
the dense format a sparse one is measured against, how much a board prefers it, and which
builder makes it. Everything that names a format (the export pipeline, the parity gate, the
ledger, the recipe schema, the command line) reads it from here: ``FILES``, ``SPARSE_OF``,
:func:`is_quantized` and :func:`board_choice` are views of the registry. The built-in formats
are registered in :mod:`robustedge.export.builders` beside their builders; adding a format is
one :class:`ExportFormat` with its builder, passed to :func:`register_format`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from robustedge.config import enum_value
from robustedge.errors import RobustEdgeError
from robustedge.registry import Registry

# The format made from the PyTorch model; every other format is made from it.
ROOT = "onnx"


class Family(str, enum.Enum):
    """The interpreter family an artifact runs on."""

    ONNX = "onnx"
    TFLITE = "tflite"


# How the host runs each family for the parity gate (recorded in export.json).
INTERPRETERS = {
    Family.ONNX.value: "onnxruntime CPUExecutionProvider, 1 thread",
    Family.TFLITE.value: "ai_edge_litert Interpreter, OpResolverType.BUILTIN_REF (reference "
    "kernels: bit-identical int8 on host and ARM), 1 thread, batch 1",
}

# builder(job, fmt) -> the written file (job: robustedge.export.builders.BuildJob)
Builder = Callable[[Any, "ExportFormat"], Path]


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    ``file``: the artifact's name in the export folder; ``family``: the interpreter that runs
    it; ``build(job, fmt)``: writes the file (see :class:`robustedge.export.builders.BuildJob`);
    ``board_rank``: a board runs the exported format of lowest rank; ``quantized``: int8
    (calibrated, judged by accuracy margins); ``dense``: for a sparse-encoded format, the dense
    format its savings are measured against; ``logit_tol``: for a float format, the allowed
    max |logit difference| to PyTorch relative to the logit scale.
    """

    name: str
    file: str
    family: Family
    build: Builder
    board_rank: int
    quantized: bool = False
    dense: Optional[str] = None
    logit_tol: float = 1e-3

    def __post_init__(self) -> None:
        object.__setattr__(self, "family", enum_value(Family, self.family, "format family"))
        if not self.file or Path(self.file).name != self.file:
            raise ValueError(
                f"format '{self.name}': file must be a plain file name, got {self.file!r}"
            )
        if not (self.logit_tol > 0):
            raise ValueError(f"format '{self.name}': logit_tol must be > 0, got {self.logit_tol}")


FORMATS: Registry[ExportFormat] = Registry("export format")


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Register ``fmt`` under its name (a duplicate name or file raises); returns it."""
    taken = {f.file: n for n, f in FORMATS.items()}
    if fmt.file in taken and fmt.name not in FORMATS:
        raise ValueError(
            f"format '{fmt.name}': file {fmt.file} already belongs to format '{taken[fmt.file]}'"
        )
    FORMATS.register(fmt.name, fmt)
    return fmt


class FormatTable(Mapping[str, Any]):
    """A read-only ``{format: value}`` view of one descriptor attribute, read from the registry
    on every access (formats registered later are included); formats whose value is None are
    left out."""

    def __init__(self, attr: str) -> None:
        self.attr = attr

    def _table(self) -> Dict[str, Any]:
        values = ((n, getattr(f, self.attr)) for n, f in FORMATS.items())
        return {n: v for n, v in values if v is not None}

    def __getitem__(self, name: str) -> Any:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return f"FormatTable({self.attr}: {self._table()})"


FILES = FormatTable("file")  # format -> artifact file name
SPARSE_OF = FormatTable("dense")  # sparse format -> the dense format it is measured against


def is_quantized(fmt: str) -> bool:
    """Formats with int8 weights and activations (calibrated; judged by accuracy margins)."""
    return FORMATS[fmt].quantized


def of_family(family: Union[Family, str]) -> Tuple[str, ...]:
    """The names of the registered formats an interpreter ``family`` runs (registry order)."""
    fam = enum_value(Family, family, "format family")
    return tuple(n for n, f in FORMATS.items() if f.family is fam)


def board_order() -> Tuple[str, ...]:
    """Every registered format, the one a board prefers first."""
    return tuple(sorted(FORMATS, key=lambda n: (FORMATS[n].board_rank, n)))


def board_choice(made: Iterable[str]) -> str:
    """The format a board runs out of the exported ``made``: the one of lowest rank."""
    order = board_order()
    names = [n for n in order if n in set(made)]
    if not names:
        raise RobustEdgeError(f"no known export format among {sorted(made)}")
    return names[0]


def check_format(name: str) -> str:
    """``name`` if it is a registered format, else a RobustEdgeError listing the known ones."""
    if name not in FORMATS:
        raise RobustEdgeError(f"unknown export format '{name}' (known: {FORMATS.known()})")
    return name


def split_formats(formats: Union[Sequence[str], str]) -> List[str]:
    """A comma list or a sequence -> the names given, stripped, empty ones dropped."""
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    return [n.strip() for n in names if n.strip()]


def parse_formats(formats: Union[Sequence[str], str]) -> List[str]:
    """Comma list or sequence -> the formats to make, validated, in a stable order: ``onnx``
    first (always: every other format is made from it), then the rest in registry order."""
    names = [check_format(n) for n in split_formats(formats)]
    return [ROOT] + [f for f in FORMATS if f in names and f != ROOT]
