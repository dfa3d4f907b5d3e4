"""The end of `robustedge run`: one screen saying, in numbers, which students beat the teacher
on the board (flash bytes, p50 latency, peak RSS; same target and format) and their robust
accuracy against the teacher's, the attack named.

Read back from the recipe's output folder with the report's own code
(:func:`robustedge.report.collect.find_runs`, :func:`robustedge.report.build.beats_teacher_lines`),
so the run and the report say the same thing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List

from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

MAX_LINES = 20  # one screen, with the run's own lines around it


def board_summary(out: Path, max_lines: int = MAX_LINES) -> List[str]:
    """The payoff lines of the recipe folder ``out`` (``[]`` when no model ran on a board;
    one line naming the problem when the folder cannot be read). At most ``max_lines``."""
    from robustedge.report.build import beats_teacher_lines
    from robustedge.report.collect import find_runs

    try:
        runs = find_runs([Path(out)])
    except RobustEdgeError as e:
        return [f"board: no summary ({e})"]
    lines = beats_teacher_lines(runs)
    if len(lines) > max_lines:
        rest = len(lines) - (max_lines - 1)
        lines = lines[: max_lines - 1] + [f"  ... {rest} more (robustedge report {out})"]
    return lines
