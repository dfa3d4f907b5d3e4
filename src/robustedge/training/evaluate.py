"""Clean and robust accuracy; every robust number carries its attack settings.

:class:`EvalPlan` is the one description of an evaluation (which attacks, budgets, steps,
corruptions, a named attack suite) that `robustedge eval` and the recipe's ``evaluate`` section
both build; its :meth:`EvalPlan.specs` are typed :class:`AttackSpec` objects end to end. A suite
(:mod:`robustedge.attacks.suite`) adds the worst case per image over its attacks, written under
``"suites"`` next to the single-attack rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from robustedge.attacks import ATTACKS, DEFAULT_EPS, AttackSpec, build_attack, predict
from robustedge.attacks.on_manifold import DEFAULT_ETA
from robustedge.attacks.suite import SUITES, AttackSuite, build_suite, worst_case_accuracy
from robustedge.config import ConfigMixin, FieldError, setting
from robustedge.data.source import ImageSource
from robustedge.errors import UnknownNameError
from robustedge.training.tensors import as_images


def _attacks_where(keep: Callable[[Any], bool]) -> Callable[[], List[str]]:
    """The registered attacks whose class passes ``keep`` (read when help is shown)."""
    return lambda: [name for name, cls in ATTACKS.items() if keep(cls)]


@dataclass(frozen=True)
class EvalPlan(ConfigMixin):
    """What to evaluate: ``attacks`` at every ``eps`` (onmanifold at ``eta`` instead), with
    the attacks' own defaults unless ``pgd_steps`` / ``square_queries`` / ``restarts``
    override them, plus natural corruptions when ``corruptions`` is set, plus the worst case
    per image over the attack suite ``suite`` (a :data:`~robustedge.attacks.suite.SUITES`
    name) at every ``eps``. `robustedge eval` (its options) and the recipe's ``evaluate:``
    section (its keys) are both built from these fields."""

    attacks: Tuple[str, ...] = setting(
        ("fgsm", "pgd"),
        cli="--attack",
        metavar="NAME",
        help="Attack (repeatable): {choices}.",
        choices=ATTACKS.names,
    )
    eps: Tuple[float, ...] = setting(
        (DEFAULT_EPS,), help="Linf budget in (0, 1] pixel units (repeatable)."
    )
    pgd_steps: Optional[int] = setting(
        None,
        help="Steps of {choices} [default: each attack's own].",
        choices=_attacks_where(lambda a: a.default_steps and a.steps_name == "steps"),
    )
    square_queries: Optional[int] = setting(
        None,
        help="Queries per image of {choices} [default: the attack's own].",
        choices=_attacks_where(lambda a: a.steps_name == "queries"),
    )
    restarts: Optional[int] = setting(
        None,
        help="Random restarts of {choices} [default: each attack's own].",
        choices=_attacks_where(lambda a: a.has_restarts),
    )
    manifold: Optional[str] = setting(
        None,
        help="VAE run folder or 'synthetic': the manifold that {choices} needs.",
        choices=_attacks_where(lambda a: "manifold" in a.needs),
    )
    eta: float = setting(
        DEFAULT_ETA,
        help="Latent budget of {choices} (latent units; replaces eps there).",
        choices=_attacks_where(lambda a: a.budget == "eta"),
    )
    corruptions: bool = setting(
        False, help="Also natural-corruption accuracy (every corruption at every severity)."
    )
    suite: Optional[str] = setting(
        None,
        help="Also the worst case per image over an attack suite at every eps: {choices}.",
        choices=SUITES.names,
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", tuple(self.attacks))
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        for i, name in enumerate(self.attacks):
            _known(ATTACKS, name, f"attacks[{i}]")
        if self.needs_manifold and not self.manifold:
            name = next(n for n in self.attacks if _needs_manifold(n))
            raise FieldError(
                "attacks", f"attack '{name}' needs 'manifold' (--manifold VAE_RUN|synthetic)"
            )
        for i, e in enumerate(self.eps):
            if not 0 < e <= 1:
                raise FieldError(f"eps[{i}]", f"eps must lie in (0, 1], got {e}")
        for key in ("pgd_steps", "square_queries", "restarts"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise FieldError(key, f"{key} must be >= 1, got {v}")
        if not (self.eta >= 0):
            raise FieldError("eta", f"eta must be >= 0 (latent units), got {self.eta}")
        if self.suite is not None:
            _known(SUITES, self.suite, "suite")

    def suites(self) -> List[AttackSuite]:
        """The plan's attack suite at every eps (none without ``suite``)."""
        return suites_at(self.suite, self.eps)

    @property
    def needs_manifold(self) -> bool:
        """Whether an attack of the plan needs a manifold (``--manifold``)."""
        return any(_needs_manifold(n) for n in self.attacks)

    def runs_anything(self) -> bool:
        """Whether the plan asks for any evaluation (the recipe plans no eval stage else)."""
        return bool(self.attacks or self.corruptions or self.suite)

    def specs(self) -> List[AttackSpec]:
        """One :class:`AttackSpec` per attack and eps (per attack at ``eta`` for latent-budget
        attacks), with the settings each attack runs."""
        specs: List[AttackSpec] = []
        for name in self.attacks:
            cls = ATTACKS[name]
            steps = self.square_queries if cls.steps_name == "queries" else self.pgd_steps
            params = {"manifold": str(self.manifold)} if _needs_manifold(name) else {}
            budgets = (self.eta,) if cls.budget == "eta" else self.eps
            specs += [AttackSpec.default(name, b, steps, self.restarts, **params) for b in budgets]
        return specs


def _needs_manifold(attack: str) -> bool:
    return "manifold" in ATTACKS[attack].needs


def _known(registry: Any, name: str, key: str) -> None:
    """FieldError ``key`` (listing the registry's names) unless ``name`` is registered."""
    try:
        registry.get(name)
    except UnknownNameError as e:
        raise FieldError(key, str(e)) from None


def suites_at(name: Optional[str], eps: Sequence[float]) -> List[AttackSuite]:
    """Suite ``name`` built at each of ``eps`` (``[]`` when ``name`` is None)."""
    return [] if name is None else [build_suite(name, float(e)) for e in eps]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y).float().mean())


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    batch_size: int = 256,
    seed: int = 0,
    resources: Optional[Mapping[str, Any]] = None,
) -> float:
    """Fraction of samples classified correctly after the attack (crafted per batch).
    ``resources`` holds what some attacks need besides the model (``manifold``)."""
    gen = torch.Generator().manual_seed(seed)
    needs = ATTACKS.get(spec.name).needs
    extra = {k: v for k, v in (resources or {}).items() if k in needs}
    attack = build_attack(model, spec, generator=gen, **extra)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = attack.perturb(xb, yb)
        correct += int((predict(model, x_adv) == yb).sum())
    return correct / len(x)


def robust_row(spec: AttackSpec, acc: float) -> Dict[str, Any]:
    """One evaluation row: the settings the attack ran with next to its accuracy."""
    return {**spec.resolved().record(), "acc": acc}


def evaluate(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    specs: Sequence[AttackSpec],
    seed: int = 0,
    resources: Optional[Mapping[str, Any]] = None,
    suites: Sequence[AttackSuite] = (),
) -> Dict[str, object]:
    """``{clean_acc, n, robust: [{attack, eps, steps, restarts, norm, acc}, ...]}``, plus
    ``suites: [{suite, label, eps, attacks, n, per_attack, worst_case_acc, ...}, ...]``
    (:class:`~robustedge.attacks.suite.SuiteResult`) when ``suites`` are given."""
    xt, yt = as_images(x), torch.as_tensor(y)
    robust = [
        robust_row(s, robust_accuracy(model, xt, yt, s, seed=seed, resources=resources))
        for s in specs
    ]
    result: Dict[str, object] = {
        "clean_acc": accuracy(model, xt, yt),
        "n": int(len(x)),
        "robust": robust,
    }
    if suites:
        result["suites"] = [
            worst_case_accuracy(model, xt, yt, s, seed=seed).to_dict() for s in suites
        ]
    return result


def evaluate_plan(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    plan: EvalPlan,
    seed: int = 0,
    resources: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Clean + the plan's attacks (+ corruptions when the plan asks for them)."""
    from robustedge.attacks.corruptions import corruption_accuracy

    result = evaluate(
        model, x, y, plan.specs(), seed=seed, resources=resources, suites=plan.suites()
    )
    if plan.corruptions and isinstance(x, ImageSource):
        result["corruptions"] = streamed_corruptions(model, x, y, seed)
    elif plan.corruptions:
        result["corruptions"] = corruption_accuracy(model, x, y, seed)
    return result


def streamed_corruptions(
    model: nn.Module,
    x: ImageSource,
    y: np.ndarray,
    seed: int,
    chunk: int = 2048,
    names: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Corruption accuracy of a streamed set, ``chunk`` images at a time: each accuracy is
    the mean over chunks weighted by their size; chunk k draws its noise from ``seed + k``
    (so the numbers are not those of the same set in memory, whose noise is one draw);
    ``names``: the corruptions (default: all)."""
    from robustedge.attacks.corruptions import corruption_accuracy

    total: Dict[str, Any] = {}
    for k, i in enumerate(range(0, len(x), chunk)):
        part = corruption_accuracy(model, x[i : i + chunk], y[i : i + chunk], seed + k, names)
        w = len(y[i : i + chunk]) / len(x)
        for key, v in part.items():
            if isinstance(v, dict):
                into = total.setdefault(key, {})
                for s, acc in v.items():
                    into[s] = into.get(s, 0.0) + w * acc
            else:
                total[key] = total.get(key, 0.0) + w * v
    return total
