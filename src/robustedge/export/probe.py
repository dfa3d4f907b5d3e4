"""Export a model that has no run folder yet (a budget search's candidate), and measure the
flash bytes of an exported file as the ledger and the bundle count them.

Used by the budget measures (:mod:`robustedge.recipe.budget_measures`: the flash of the
teacher and of the trained student, and the latency of a candidate), which the budget code in
:mod:`robustedge.compress.budget` is given from above. The parity gate is off and the transfer
set is one PGD step: only the file is asked for here; the run's own export (``robustedge
export``, the recipe's export stage) checks parity.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

from robustedge.config import default_of
from robustedge.export.config import ExportConfig
from robustedge.export.formats import board_choice
from robustedge.export.ledger import flash_sizes
from robustedge.export.pipeline import ExportReport, export_run
from robustedge.hashing import sha256_file
from robustedge.io import PathLike, write_yaml

logger = logging.getLogger(__name__)

# What a board stores by default: the format it runs out of a default export (tflite-int8).
FLASH_FORMAT = board_choice(default_of(ExportConfig, "formats"))
# Only the file is asked for: no parity gate, a one-step transfer set.
PROBE = ExportConfig(parity=False, transfer_steps=1, transfer_restarts=1)


def export_model(
    model: Any,
    spec: Any,
    data_name: str,
    data_dir: Optional[str],
    fmt: str,
    work: PathLike,
    structure: str = "shrunk",
) -> ExportReport:
    """``model`` (architecture ``spec``, possibly shrunk) saved as a throw-away run folder in
    ``work`` and exported to ``fmt`` (parity gate off); the export report."""
    from robustedge.models import save_model

    run = Path(work) / "candidate"
    save_model(run, model, spec, extra={"structure": structure})
    write_yaml(run / "config.yaml", {"data": data_name, "data_dir": data_dir})
    return export_run(run, PROBE.replace(formats=(fmt,)), model=model)


def export_flash(run: PathLike, fmt: str = FLASH_FORMAT, out: Optional[PathLike] = None) -> Dict:
    """Export the run folder ``run`` to ``fmt`` in ``out`` (parity gate off) and measure the
    file: :func:`measured_flash`."""
    rep = export_run(run, PROBE.replace(formats=(fmt,)), out=out)
    return measured_flash(rep.path(fmt), fmt)


def measured_flash(path: Path, fmt: str) -> Dict[str, Any]:
    """The exported file's sizes as the ledger records them (``flash_bytes``: the file
    compressed with the bundle's default codec, what the board stores; ``model_bytes``: what
    the interpreter loads) with its format and sha256."""
    return {"format": fmt, **flash_sizes(Path(path)), "sha256": sha256_file(Path(path))}
