"""What a check found: one :class:`Outcome` per model x target x gate, in a
:class:`CheckResult` (its JSON form: ``to_dict``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Union


@dataclass(frozen=True)
class Outcome:
    """One gate on one model x target: what was measured, against what, and the verdict."""

    model: str
    target: str
    format: Optional[str]
    gate: str  # as written, or "robust vs baseline"
    metric: str
    measured: Optional[Union[float, str]]
    threshold: str  # ">= 0.97", "drop <= 0.01 or p >= 0.05"
    passed: bool
    label: str = ""  # what the value is (the attack and its settings for robust metrics)
    detail: str = ""  # regression: baseline value, test, p-value
    kind: str = "gate"  # gate | regression

    @property
    def line(self) -> str:
        """The one line a CI log shows for a failure."""
        where = f"{self.model} @ {self.target}" + (f" [{self.format}]" if self.format else "")
        got = "not measured" if self.measured is None else _fmt(self.measured)
        text = f"{where}: {self.metric} = {got}, needs {self.threshold}"
        extra = "; ".join(x for x in (self.label, self.detail) if x)
        return text + (f" ({extra})" if extra else "")


def _fmt(v: Union[float, str]) -> str:
    return v if isinstance(v, str) else f"{v:.6g}"


@dataclass
class CheckResult:
    """Every outcome and notes (inputs that matched no gate, subjects with no baseline)."""

    outcomes: List[Outcome] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    subjects: int = 0

    @property
    def failures(self) -> List[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": "robustedge.check/1",
            "passed": self.passed,
            "counts": {"gates": len(self.outcomes), "failed": len(self.failures)},
            "subjects": self.subjects,
            "outcomes": [asdict(o) for o in self.outcomes],
            "notes": list(self.notes),
        }
