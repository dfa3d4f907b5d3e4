"""Clean and robust accuracy; every robust number carries its attack settings.

:class:`EvalPlan` is the one description of an evaluation (which attacks, budgets, steps,
corruptions, a named attack suite) that `robustedge eval` and the recipe's ``evaluate`` section
both build; its :meth:`EvalPlan.specs` are typed :class:`AttackSpec` objects end to end. A suite
(:mod:`robustedge.attacks.suite`) adds the worst case per image over its attacks, written under
``"suites"`` next to the single-attack rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from robustedge.attacks import ATTACKS, DEFAULT_EPS, AttackSpec, build_attack, predict
from robustedge.attacks.on_manifold import eval_spec as onmanifold_spec
from robustedge.attacks.suite import AttackSuite, build_suite, check_suite, worst_case_accuracy

DEFAULT_ETA = 0.3  # on-manifold latent budget of `robustedge eval` (latent units)


@dataclass(frozen=True)
class EvalPlan:
    """What to evaluate: ``attacks`` at every ``eps`` (onmanifold at ``eta`` instead), with
    the attacks' defaults unless ``pgd_steps`` / ``square_queries`` / ``restarts`` override
    them, plus natural corruptions when ``corruptions`` is set, plus the worst case per image
    over the attack suite ``suite`` (a :data:`~robustedge.attacks.suite.SUITES` name) at every
    ``eps``."""

    attacks: Tuple[str, ...] = ("fgsm", "pgd")
    eps: Tuple[float, ...] = (DEFAULT_EPS,)
    pgd_steps: Optional[int] = None
    square_queries: Optional[int] = None
    restarts: Optional[int] = None
    manifold: Optional[str] = None
    eta: float = DEFAULT_ETA
    corruptions: bool = False
    suite: Optional[str] = None

    def __post_init__(self) -> None:
        for name in self.attacks:
            ATTACKS.get(name)
        if self.suite is not None:
            check_suite(self.suite)

    def suites(self) -> List[AttackSuite]:
        """The plan's attack suite at every eps (none without ``suite``)."""
        return suites_at(self.suite, self.eps)

    @property
    def needs_manifold(self) -> bool:
        return "onmanifold" in self.attacks

    def specs(self) -> List[AttackSpec]:
        specs: List[AttackSpec] = []
        for name in self.attacks:
            if name == "onmanifold":
                specs.append(
                    onmanifold_spec(self.eta, self.manifold, self.pgd_steps, self.restarts)
                )
                continue
            steps = self.square_queries if name == "square" else self.pgd_steps
            specs += [AttackSpec.default(name, e, steps, self.restarts) for e in self.eps]
        return specs


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
    needs = getattr(ATTACKS.get(spec.name), "needs", ())
    extra = {k: v for k, v in (resources or {}).items() if k in needs}
    attack = build_attack(model, spec, generator=gen, **extra)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = attack.perturb(xb, yb)
        correct += int((predict(model, x_adv) == yb).sum())
    return correct / len(x)


def robust_row(spec: AttackSpec, acc: float) -> Dict[str, Any]:
    """One evaluation row: the attack's settings next to its accuracy."""
    return {**spec.record(), "acc": acc}


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
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
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
    if plan.corruptions:
        result["corruptions"] = corruption_accuracy(model, x, y, seed)
    return result
