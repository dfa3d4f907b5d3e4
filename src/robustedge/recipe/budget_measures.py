"""The measures of flash and latency budgets, passed down to
:func:`robustedge.compress.budget.compress_to_budget` (:class:`BoardMeasures`).

They compose export and device, so they live above both; the budget code in
:mod:`robustedge.compress.budget` only sees the
:class:`~robustedge.compress.budget.BudgetMeasures` object.

- flash: the bundle's codec (the estimate the search uses), the teacher's ``tflite-int8``
  export measured once (the estimate's calibration) and the trained student's export measured
  (flash bytes: the file compressed with the bundle's codec; model bytes: what is loaded).
- arena (microcontrollers): a candidate's ``tflite-int8`` export loaded by the TFLM interpreter,
  which reports the smallest tensor arena it runs in (``device.board.tflm.arena``).
- latency: a candidate (a shrunk copy of the teacher) becomes a throw-away run folder, is
  exported to the benchmark format (int8 TFLite by default; parity gate off: only its speed is
  asked here), put in a bundle and run by the unchanged board runner on the target, which
  returns its p50.

Emulated targets are refused: emulated latency is 7-150x off and says nothing about a board.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from robustedge.device.board.config import MIN_RUNS, BenchConfig
from robustedge.device.host.targets import is_emulated
from robustedge.errors import RobustEdgeError
from robustedge.export.probe import FLASH_FORMAT

logger = logging.getLogger(__name__)

# How a candidate's latency is measured: the int8 file a board would run, the runner's fewest
# timed invokes, no on-board attack (only its speed is asked).
PROBE_BENCH = BenchConfig(format=FLASH_FORMAT, runs=MIN_RUNS, square_queries=0)
# how the trained student's flash bytes were measured (its export's format goes in front)
GATED_HOW = "exported with the run's default export settings, parity gate passed"
FLASH_HOW = (
    "exported with default calibration, parity gate off "
    "(the run's own export re-checks parity and records the same sizes in its ledger)"
)
# a refused student's file: the one its own export built before the gate refused it
REFUSED_HOW = "exported with the run's default export settings, parity gate refused it"


def refuse_emulated(target: str, emulated: bool = False) -> None:
    """One-line RobustEdgeError when ``target`` is emulated (its registered target class says
    so: a qemu-user userland, a full-system VM, ...)."""
    if emulated or is_emulated(target):
        raise RobustEdgeError(
            f"latency budgets cannot be measured on {target}: it is emulated, and emulated "
            "latency says nothing about a board (use local or ssh://user@host)"
        )


def latency_measure(
    target: str,
    spec: Any,
    data_name: str,
    data_dir: Optional[str] = None,
    bench: BenchConfig = PROBE_BENCH,
    ssh_options: Sequence[str] = (),
) -> Callable[[Any], float]:
    """``model -> p50 ms`` of one inference of ``model`` (architecture ``spec``, possibly
    shrunk) on ``target``, as the board runner measures it with ``bench`` (its format,
    threads and timed runs)."""
    from robustedge.device.host.targets import make_target

    refuse_emulated(target)
    board = make_target(target, ssh_options=list(ssh_options))
    refuse_emulated(board.name, board.emulated)

    def measure(model: Any) -> float:
        from robustedge.device.host.bundle import build_bundle
        from robustedge.export.probe import export_model

        tmp = Path(tempfile.mkdtemp(prefix="robustedge-probe-"))
        try:
            export_model(model, spec, data_name, data_dir, bench.format, tmp)
            bundle = build_bundle(tmp / "candidate", tmp / "bundle", [bench.format])
            results = board.bench(bundle, bench)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        latency = results.get("latency") or {}
        if "p50_ms" not in latency:
            raise RobustEdgeError(f"{target} returned no latency for the candidate")
        return float(latency["p50_ms"])

    return measure


def tflm_arena(path: Path) -> Dict[str, Any]:
    """The TFLM interpreter's smallest arena for the int8 file ``path`` (and its bytes)."""
    from robustedge.device.board import tflm

    data = Path(path).read_bytes()
    return {"format": FLASH_FORMAT, **tflm.arena(data), "tflm_flash_bytes": len(data)}


@dataclass(frozen=True)
class BoardMeasures:
    """:class:`~robustedge.compress.budget.BudgetMeasures` on real exports and boards: the
    bundle's codec, ``tflite-int8`` exports measured as the ledger measures them, and the p50
    of the board runner on a target (``bench``: how it measures; ``ssh_options``)."""

    bench: BenchConfig = PROBE_BENCH
    ssh_options: Tuple[str, ...] = ()

    def pack(self, raw: bytes) -> bytes:
        """``raw`` compressed with the bundle's default codec (what a board stores)."""
        from robustedge.codec import compress_bytes

        return compress_bytes(raw)

    def model_flash(
        self, model: Any, spec: Any, data_name: str, data_dir: Optional[str]
    ) -> Dict[str, Any]:
        """The sizes of ``model``'s ``tflite-int8`` export (parity gate off)."""
        from robustedge.export.probe import export_model, measured_flash

        with tempfile.TemporaryDirectory(prefix="robustedge-flash-") as tmp:
            rep = export_model(model, spec, data_name, data_dir, FLASH_FORMAT, tmp, "dense")
            return measured_flash(rep.path(FLASH_FORMAT), FLASH_FORMAT)

    def run_flash(self, run: Path) -> Dict[str, Any]:
        """The sizes of the run folder ``run``'s ``tflite-int8`` export as its own export
        makes it (default settings, parity gate on), and how it was made; when the gate
        refuses the student, the sizes of a gate-off export with ``parity: False`` and why
        (a budget is then not met: the student would not ship). The refused file is the one
        the export built and kept beside its failure report (its gate runs after the build);
        only an export that failed before building it is made again with the gate off."""
        from robustedge.export import FORMATS, ExportConfig, export_run
        from robustedge.export.probe import export_flash, measured_flash

        with tempfile.TemporaryDirectory(prefix="robustedge-flash-") as tmp:
            try:
                rep = export_run(run, ExportConfig(formats=(FLASH_FORMAT,)), Path(tmp) / "x")
                sizes = measured_flash(rep.path(FLASH_FORMAT), FLASH_FORMAT)
                return {**sizes, "parity": True, "how": f"{FLASH_FORMAT} {GATED_HOW}"}
            except RobustEdgeError as e:
                kept = Path(tmp) / "x.failed" / FORMATS[FLASH_FORMAT].file
                if kept.is_file():
                    sizes, how = measured_flash(kept, FLASH_FORMAT), REFUSED_HOW
                else:
                    sizes = export_flash(run, FLASH_FORMAT, Path(tmp) / "probe")
                    how = FLASH_HOW
                return {**sizes, "parity": False, "refused": str(e), "how": f"{FLASH_FORMAT} {how}"}

    def model_arena(
        self, model: Any, spec: Any, data_name: str, data_dir: Optional[str]
    ) -> Dict[str, Any]:
        """The tensor arena TFLM needs for ``model``'s ``tflite-int8`` export (parity gate
        off), and the file's TFLM flash bytes."""
        from robustedge.export.probe import export_model

        with tempfile.TemporaryDirectory(prefix="robustedge-arena-") as tmp:
            rep = export_model(model, spec, data_name, data_dir, FLASH_FORMAT, tmp)
            return tflm_arena(rep.path(FLASH_FORMAT))

    def run_arena(self, run: Path) -> Dict[str, Any]:
        """The tensor arena TFLM needs for the run folder ``run``'s ``tflite-int8`` export."""
        from robustedge.export.pipeline import export_run
        from robustedge.export.probe import PROBE

        with tempfile.TemporaryDirectory(prefix="robustedge-arena-") as tmp:
            rep = export_run(run, PROBE.replace(formats=(FLASH_FORMAT,)), out=Path(tmp) / "x")
            return {**tflm_arena(rep.path(FLASH_FORMAT)), "how": f"{FLASH_FORMAT} {FLASH_HOW}"}

    def latency(
        self, target: str, spec: Any, data_name: str, data_dir: Optional[str]
    ) -> Callable[[Any], float]:
        """``model -> p50 ms`` on ``target`` (:func:`latency_measure`); refuses an emulated
        target."""
        return latency_measure(target, spec, data_name, data_dir, self.bench, self.ssh_options)
