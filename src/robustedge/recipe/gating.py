"""The recipe's ``gates:`` applied at the end of `robustedge run`: the same check as
``robustedge check OUT`` (it reads the gates from ``OUT/recipe.json``), its result written to
``OUT/gates.json`` and summarized in ``summary.json``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

from robustedge.gates import check
from robustedge.io import write_json

logger = logging.getLogger(__name__)
GATES_FILE = "gates.json"


def apply_gates(out: Path) -> Dict[str, Any]:
    """Check the finished recipe folder ``out`` against its own gates; write ``gates.json``;
    return what the summary records (passed, counts, one line per failure)."""
    result = check([Path(out)])
    write_json(Path(out) / GATES_FILE, result.to_dict())
    failed = [o.line for o in result.failures]
    if failed:
        logger.warning("%d gate(s) failed: %s", len(failed), failed[0])
    return {
        "passed": result.passed,
        "gates": len(result.outcomes),
        "failed": failed,
        "file": GATES_FILE,
    }
