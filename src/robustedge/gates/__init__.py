"""Gates for CI: pass/fail on measured results (``robustedge check``), per-model and
per-target thresholds (a recipe's ``gates:``), regression against a baseline with a
statistical test, and JUnit / Markdown / JSON output."""

from robustedge.gates.check import check, load_gates_file, recipe_gates
from robustedge.gates.expr import Gate, GateError, parse_gate
from robustedge.gates.metrics import METRICS, Metric
from robustedge.gates.result import CheckResult, Outcome
from robustedge.gates.spec import GatesSpec, RegressionConfig

__all__ = [
    "METRICS",
    "CheckResult",
    "Gate",
    "GateError",
    "GatesSpec",
    "Metric",
    "Outcome",
    "RegressionConfig",
    "check",
    "load_gates_file",
    "parse_gate",
    "recipe_gates",
]
