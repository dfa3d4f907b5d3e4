"""A recipe's ``gates:`` section: parsed into :class:`robustedge.gates.spec.GatesSpec` and
checked against the recipe's models and targets (file:line errors through ``Located``)."""

from __future__ import annotations

from typing import Any, Optional

from robustedge.device.host.targets import target_class
from robustedge.gates.spec import GatesSpec
from robustedge.recipe.loader import FieldError, Located, join


def first_line(e: Exception) -> str:
    """The first line of an error's text (its type name when empty)."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def parse_gates(value: Any, loc: Located) -> Optional[GatesSpec]:
    """``gates:`` (robustedge.gates.spec.GatesSpec): thresholds `robustedge run` and
    `robustedge check` apply to the results."""
    if value is None:
        return None
    try:
        return GatesSpec.from_mapping(value)
    except FieldError as e:
        raise loc.error(join("gates", e.key), str(e)) from None
    except ValueError as e:
        raise loc.error("gates", first_line(e)) from None


def check_gates(r: Any, loc: Located) -> None:
    """Gates name the recipe's models and targets; no absolute latency on emulated ones."""
    if r.gates is None:
        return
    models = ["teacher", *(n for n, _, _ in r.students())]
    targets = {
        t.target: target_class(t.target).emulated for t in (r.devices.targets if r.devices else ())
    }
    try:
        r.gates.check_against(models, targets)
    except FieldError as e:
        raise loc.error(join("gates", e.key), str(e)) from None
