"""The report's gates section: the verdicts `robustedge run` wrote to a recipe folder's
``gates.json`` (the recipe's ``gates:``, the same check as `robustedge check OUT`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

GATES_FILE = "gates.json"  # written by robustedge.recipe.gating
TITLE = "Gates"
NOTE = (
    "The recipe's gates: section, checked when the run finished (robustedge check OUT gives "
    "the same verdicts, exit 1 on a failure). Failures first; robust figures name their attack."
)
HEADER = ["verdict", "model", "target", "gate", "measured", "needs", "what"]


def gates_rows(paths: Sequence[Path]) -> Optional[Tuple[List[str], List[List[str]]]]:
    """(header, rows) of every gates.json directly under ``paths``, or None when none has one."""
    outcomes = [o for p in map(Path, paths) for o in _outcomes(p / GATES_FILE)]
    if not outcomes:
        return None
    outcomes.sort(key=lambda o: bool(o.get("passed")))
    return HEADER, [_row(o) for o in outcomes]


def _outcomes(path: Path) -> List[dict]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # a damaged file is left out, like an unfinished run
    items = data.get("outcomes") if isinstance(data, dict) else None
    return [o for o in items or [] if isinstance(o, dict)]


def _row(o: dict) -> List[str]:
    got = o.get("measured")
    shown = "not measured" if got is None else got if isinstance(got, str) else f"{got:.4g}"
    target = str(o.get("target", "")) + (f" [{o['format']}]" if o.get("format") else "")
    what = "; ".join(str(x) for x in (o.get("label"), o.get("detail")) if x)
    verdict = "pass" if o.get("passed") else "FAIL"
    return [
        verdict,
        str(o.get("model", "")),
        target,
        str(o.get("gate", "")),
        shown,
        str(o.get("threshold", "")),
        what,
    ]
