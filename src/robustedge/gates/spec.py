"""The gates a check applies: :class:`GatesSpec` (a recipe's ``gates:`` section, or a YAML
file given to ``robustedge check --gates``) and :class:`RegressionConfig` (the thresholds of
the comparison with a baseline run).

Resolution for one model on one target, most specific first: ``models: {NAME: {targets:
{TARGET: [...]}}}``, ``models: {NAME: [...]}``, ``targets: {TARGET: [...]}``, ``expect:
[...]``; a more specific gate on a metric replaces the less specific ones on that metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from robustedge.config import ConfigMixin, FieldError, check_fraction, setting
from robustedge.gates.expr import Gate, GateError, parse_gate
from robustedge.gates.metrics import METRICS


@dataclass(frozen=True)
class RegressionConfig(ConfigMixin):
    """When a run counts as a regression against the baseline (``--baseline``)."""

    max_drop: float = setting(
        0.01,
        help="Clean or robust accuracy may drop this much (fraction: 0.01 = 1 point) below "
        "the baseline; a larger drop fails when it is also significant (--alpha).",
    )
    alpha: float = setting(
        0.05,
        help="Significance level of the one-sided drop test (exact McNemar on per-image "
        "outcomes when both runs kept them on the same images, else a two-proportion z-test).",
    )
    max_flash_growth: float = setting(
        0.05, help="Flash bytes may grow by this fraction over the baseline's."
    )
    max_latency_growth: float = setting(
        0.10,
        help="p50_vs_teacher (latency relative to the teacher, same target) may grow by this "
        "fraction over the baseline's.",
    )

    def __post_init__(self) -> None:
        for name in ("max_drop", "alpha"):
            try:
                check_fraction(self, name, low_open=name == "alpha", high_open=True)
            except ValueError as e:
                raise FieldError(name, str(e)) from None
        for name in ("max_flash_growth", "max_latency_growth"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"{name} must be >= 0, got {getattr(self, name)}")


def parse_gates(value: Any, where: str) -> Tuple[Gate, ...]:
    """A list of gate expressions (or one string) -> gates; GateError naming ``where``."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise FieldError(where, f"expected a list of gates like 'clean>=0.97', got {value!r}")
    out: List[Gate] = []
    for i, text in enumerate(items):
        try:
            out.append(parse_gate(text))
        except GateError as e:
            raise FieldError(f"{where}[{i}]", str(e)) from None
    return tuple(out)


@dataclass(frozen=True)
class GatesSpec:
    """``expect`` for every model and target; ``targets`` and ``models`` override per metric
    (a model's entry is a list, or ``{expect: [...], targets: {TARGET: [...]}}``)."""

    expect: Tuple[str, ...] = ()
    targets: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    models: Mapping[str, Any] = field(default_factory=dict)
    regression: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_gates(list(self.expect), "expect")
        for key in ("targets", "models", "regression"):
            if not isinstance(getattr(self, key), Mapping):
                raise FieldError(key, f"expected a mapping, got {getattr(self, key)!r}")
        for t, items in self.targets.items():
            parse_gates(items, f"targets.{t}")
        for m, entry in self.models.items():
            self.model_entry(m, entry)
        self.regression_config()

    @staticmethod
    def model_entry(name: str, entry: Any) -> Tuple[Tuple[Gate, ...], Dict[str, Tuple[Gate, ...]]]:
        """A model's gates for every target and per target."""
        where = f"models.{name}"
        if isinstance(entry, (list, tuple, str)):
            return parse_gates(entry, where), {}
        if not isinstance(entry, Mapping) or set(entry) - {"expect", "targets"}:
            raise FieldError(where, "expected a list of gates or {expect: [...], targets: {...}}")
        targets = entry.get("targets") or {}
        if not isinstance(targets, Mapping):
            raise FieldError(f"{where}.targets", "expected a mapping TARGET: [gates]")
        per = {t: parse_gates(v, f"{where}.targets.{t}") for t, v in targets.items()}
        return parse_gates(entry.get("expect") or [], f"{where}.expect"), per

    def regression_config(self) -> RegressionConfig:
        unknown = set(self.regression) - set(RegressionConfig.__dataclass_fields__)
        if unknown:
            known = ", ".join(RegressionConfig.__dataclass_fields__)
            raise FieldError("regression", f"unknown keys {sorted(unknown)} (known: {known})")
        try:
            return RegressionConfig(**self.regression)
        except FieldError as e:
            raise FieldError(f"regression.{e.key}", str(e)) from None
        except TypeError as e:
            raise FieldError("regression", str(e)) from None

    def all_gates(self) -> List[Tuple[str, str, Gate]]:
        """(model or '', target or '', gate) for every gate written in this spec."""
        out = [("", "", g) for g in parse_gates(list(self.expect), "expect")]
        out += [("", t, g) for t, v in self.targets.items() for g in parse_gates(v, t)]
        for m, entry in self.models.items():
            every, per = self.model_entry(m, entry)
            out += [(m, "", g) for g in every]
            out += [(m, t, g) for t, gs in per.items() for g in gs]
        return out

    def for_subject(self, model: str, target: str) -> Dict[str, List[Gate]]:
        """The gates that apply to ``model`` on ``target``, by metric, most specific level
        winning per metric."""
        levels: List[Tuple[Gate, ...]] = [parse_gates(list(self.expect), "expect")]
        if target in self.targets:
            levels.append(parse_gates(self.targets[target], f"targets.{target}"))
        if model in self.models:
            every, per = self.model_entry(model, self.models[model])
            levels += [every, per.get(target, ())]
        chosen: Dict[str, List[Gate]] = {}
        for level in levels:
            mine: Dict[str, List[Gate]] = {}
            for g in level:
                mine.setdefault(g.metric, []).append(g)
            chosen.update(mine)
        return chosen

    def check_against(self, models: Sequence[str], targets: Mapping[str, bool]) -> None:
        """Refuse (FieldError naming the key) what a recipe's runs can never satisfy: a model
        or target the recipe does not have (``targets``: target -> emulated), and an absolute
        latency gate that would apply to an emulated target."""
        for t in self.targets:
            if t not in targets:
                raise FieldError(f"targets.{t}", f"not a devices target (have: {list(targets)})")
        for m, entry in self.models.items():
            if m not in models:
                raise FieldError(f"models.{m}", f"no model named {m} (have: {list(models)})")
            for t in self.model_entry(m, entry)[1]:
                if t not in targets:
                    raise FieldError(f"models.{m}.targets.{t}", f"not a devices target ({t})")
        emulated = [t for t, emu in targets.items() if emu]
        for model, target, gate in self.all_gates():
            hit = [target] if target else emulated
            if METRICS[gate.metric].absolute_latency and any(t in emulated for t in hit):
                key = (
                    ".".join(
                        x
                        for x in (
                            "models." + model if model else "",
                            "targets." + target if target else "",
                        )
                        if x
                    )
                    or "expect"
                )
                raise FieldError(
                    key,
                    f"gate '{gate.text}': absolute latency on an emulated target "
                    f"({', '.join(t for t in hit if t in emulated)}) says nothing about a board: "
                    "gate p50_vs_teacher there, or put the latency gate under a real target",
                )

    @classmethod
    def from_mapping(cls, value: Any) -> GatesSpec:
        """Build from a parsed YAML/JSON mapping (unknown keys refused)."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise FieldError("", f"gates: expected a mapping, got {value!r}")
        unknown = set(value) - {"expect", "targets", "models", "regression"}
        if unknown:
            raise FieldError(
                sorted(unknown)[0], "unknown key (known: expect, targets, models, regression)"
            )
        expect = value.get("expect") or ()
        return cls(
            expect=(expect,) if isinstance(expect, str) else tuple(expect),
            targets=dict(value.get("targets") or {}),
            models=dict(value.get("models") or {}),
            regression=dict(value.get("regression") or {}),
        )
