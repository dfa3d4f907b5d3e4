"""Gate expressions: ``clean>=0.97``, ``robust>=75%``, ``flash_kb<=64``, ``macs<=2M``,
``parity=pass``, ``p50_vs_teacher<=0.7``.

A gate is ``METRIC OP VALUE``; ``OP`` is one of ``>= <= > < = == !=``; ``VALUE`` is a number
(``%`` divides by 100, ``k``/``M``/``G`` multiply by 1e3/1e6/1e9) or, for a pass/fail metric,
``pass`` / ``fail``. The metric must be registered (:data:`robustedge.gates.metrics.METRICS`);
its kind decides which values it takes. Anything else is a :class:`GateError` (one line, the
command's exit 2).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Callable, Dict, Union

from robustedge.errors import RobustEdgeError

Value = Union[float, str]

OPS: Dict[str, Callable[[object, object], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
}
SCALES = {"%": 0.01, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
PASS_FAIL = ("pass", "fail")
_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|==|!=|=|>|<)\s*(\S+)\s*$")
_NUMBER = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([%kKMG]?)$")


class GateError(RobustEdgeError):
    """A gate that cannot be read or applied (unknown metric, bad expression): exit 2."""


@dataclass(frozen=True)
class Gate:
    """One threshold on one metric: ``metric op value`` (``text`` as the user wrote it)."""

    metric: str
    op: str
    value: Value
    text: str

    def holds(self, measured: Value) -> bool:
        """Whether ``measured`` satisfies the gate."""
        return bool(OPS[self.op](measured, self.value))

    @property
    def threshold(self) -> str:
        """``>= 0.97`` / ``= pass``: the gate's right-hand side as written in reports."""
        v = self.value if isinstance(self.value, str) else f"{self.value:g}"
        return f"{'=' if self.op == '==' else self.op} {v}"


def parse_number(text: str) -> float:
    """``0.97`` / ``97%`` / ``2M`` -> float; ValueError otherwise."""
    m = _NUMBER.match(text.strip())
    if not m:
        raise ValueError(f"'{text}' is not a number (e.g. 0.97, 97%, 64, 2M)")
    return float(m.group(1)) * SCALES.get(m.group(2), 1.0)


def parse_gate(text: str) -> Gate:
    """Read one gate expression; :class:`GateError` naming the problem (the metric's registry
    lists the known metrics on a miss)."""
    from robustedge.gates.metrics import METRICS

    if not isinstance(text, str):
        raise GateError(f"gate {text!r}: expected a string like 'clean>=0.97'")
    m = _EXPR.match(text)
    if not m:
        raise GateError(
            f"cannot parse gate '{text}': write METRIC OP VALUE, e.g. 'clean>=0.97' "
            "(OP: >= <= > < = !=)"
        )
    name, op, raw = m.groups()
    if name not in METRICS:
        raise GateError(f"gate '{text}': unknown metric '{name}' (known: {METRICS.known()})")
    metric = METRICS[name]
    if metric.pass_fail:
        if raw not in PASS_FAIL or op not in ("=", "==", "!="):
            raise GateError(f"gate '{text}': {name} is pass/fail: write '{name}=pass'")
        return Gate(name, op, raw, text.strip())
    if op in ("=", "==", "!=") and not metric.exact:
        raise GateError(f"gate '{text}': compare {name} with >= <= > <, not {op}")
    try:
        value = parse_number(raw)
    except ValueError as e:
        raise GateError(f"gate '{text}': {e}") from None
    return Gate(name, op, value, text.strip())
