"""Worst-case robust accuracy per image over a named suite of attacks (AutoAttack's rule).

An image counts as robust only if the model classifies it correctly and *every* attack in the
suite fails on it; the suite's robust accuracy is never higher than any single attack's.
Misclassified clean images are not attacked (they count as non-robust), as in AutoAttack.

Suites are named and registered in ``SUITES`` (a factory ``eps -> AttackSuite``):

- ``worst-case``: PGD-20 x 5 restarts, APGD-CE-100, APGD-DLR-100, Square-1000 (Linf);
- ``worst-case-quick``: PGD-10 x 2, APGD-CE-25, APGD-DLR-25, Square-200, for smoke runs;
- ``autoattack``: standard AutoAttack (Croce & Hein 2020) as the field reports it, APGD-CE-100,
  APGD-T-100, FAB-T-100 (9 targets each), Square-5000, run by torchattacks
  (:mod:`robustedge.attacks.autoattack`), in AutoAttack's cascade;
- ``autoattack-quick``: the same four at 25 steps and 500 queries, for smoke runs.

Every result records the suite's name, its label (``worst case of PGD-20x5, APGD-CE-100,
APGD-DLR-100, Square-1000``), the full spec of each of its attacks and, for suites run by
another package, that package and its version (``implementation``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from robustedge.attacks.base import ATTACKS, DEFAULT_EPS, AttackSpec, build_attack, predict
from robustedge.registry import Registry

SUITES: Registry = Registry("attack suite")
DEFAULT_SUITE = "worst-case"


@dataclass(frozen=True)
class AttackSuite:
    """A named, ordered set of attacks sharing one eps and norm."""

    name: str
    specs: Tuple[AttackSpec, ...]
    cascade: bool = False  # by default, attack only the survivors of the attacks before
    implementation: str = ""  # the package that runs the attacks when not robustedge

    def __post_init__(self) -> None:
        object.__setattr__(self, "specs", tuple(self.specs))
        if not self.name:
            raise ValueError("an attack suite needs a name")
        if not self.specs:
            raise ValueError(f"attack suite '{self.name}' has no attacks")
        budgets = {(s.eps, s.norm) for s in self.specs}
        if len(budgets) > 1:
            raise ValueError(
                f"attack suite '{self.name}' mixes budgets {sorted(budgets)}: a worst case per "
                "image needs one eps and norm"
            )
        labels = [s.label() for s in self.specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"attack suite '{self.name}' lists an attack twice: {labels}")

    @property
    def eps(self) -> float:
        return self.specs[0].eps

    def to_dict(self) -> Dict[str, Any]:
        out = {"name": self.name, "attacks": [s.to_dict() for s in self.specs]}
        return {**out, "implementation": self.implementation} if self.implementation else out

    def label(self) -> str:
        """``worst case of PGD-20x5, APGD-CE-100, APGD-DLR-100, Square-1000``."""
        return "worst case of " + ", ".join(short_label(s) for s in self.specs)


def short_label(spec: AttackSpec) -> str:
    """A compact attack name: ``PGD-20x5`` (steps x restarts), ``APGD-CE-100``,
    ``Square-1000`` (queries), ``FGSM``; an L2 attack gets ``(L2)``. The name is the attack
    class's ``short_name`` (the spec's name for an attack not registered here)."""
    s = ATTACKS[spec.name].short_name if spec.name in ATTACKS else spec.name
    if spec.steps:
        s += f"-{spec.steps}"
    if spec.restarts > 1:
        s += f"x{spec.restarts}"
    return s + (" (L2)" if spec.norm == "l2" else "")


def suites_help(eps: float = DEFAULT_EPS) -> str:
    """``worst-case (PGD-20x5, APGD-CE-100, ...) | ...``: every registered suite with its
    attacks, for help texts (the names and labels come from ``SUITES`` alone)."""
    parts = []
    for name, factory in SUITES.items():
        attacks = factory(eps).label().removeprefix("worst case of ")
        parts.append(f"{name} ({attacks})")
    return " | ".join(parts) + " [default: none]"


def check_suite(name: str) -> str:
    """``name`` if it is a registered suite; else an error listing the known ones."""
    SUITES.get(name)
    return name


def build_suite(name: str, eps: float) -> AttackSuite:
    """The registered suite ``name`` at budget ``eps``."""
    return SUITES.get(name)(eps)


@SUITES.register("worst-case")
def worst_case_suite(eps: float) -> AttackSuite:
    return AttackSuite(
        "worst-case",
        (
            AttackSpec("pgd", eps, steps=20, restarts=5),
            AttackSpec("apgd-ce", eps, steps=100),
            AttackSpec("apgd-dlr", eps, steps=100),
            AttackSpec("square", eps, steps=1000),
        ),
    )


@SUITES.register("worst-case-quick")
def worst_case_quick_suite(eps: float) -> AttackSuite:
    return AttackSuite(
        "worst-case-quick",
        (
            AttackSpec("pgd", eps, steps=10, restarts=2),
            AttackSpec("apgd-ce", eps, steps=25),
            AttackSpec("apgd-dlr", eps, steps=25),
            AttackSpec("square", eps, steps=200),
        ),
    )


def _aa_specs(eps: float, steps: Optional[int] = None, queries: Optional[int] = None):
    names = ("autoattack-apgd-ce", "autoattack-apgd-t", "autoattack-fab-t")
    return tuple(AttackSpec.default(n, eps, steps=steps) for n in names) + (
        AttackSpec.default("autoattack-square", eps, steps=queries),
    )


@SUITES.register("autoattack")
def autoattack_suite(eps: float) -> AttackSuite:
    from robustedge.attacks.autoattack import implementation

    return AttackSuite("autoattack", _aa_specs(eps), True, implementation())


@SUITES.register("autoattack-quick")
def autoattack_quick_suite(eps: float) -> AttackSuite:
    from robustedge.attacks.autoattack import implementation

    specs = _aa_specs(eps, steps=25, queries=500)
    return AttackSuite("autoattack-quick", specs, True, implementation())


@dataclass
class SuiteResult:
    """Outcome of :func:`worst_case_accuracy`.

    ``per_attack`` holds one row per attack: its spec fields, ``acc`` (robust accuracy under
    that attack alone; ``None`` in cascade mode, where it only saw the survivors of the
    attacks before it) and ``broke`` (images it fooled that no earlier attack had).
    ``robust`` is the per-image worst-case verdict (True = every attack failed).
    """

    suite: str
    label: str
    eps: float
    attacks: List[Dict[str, Any]]
    n: int
    clean_acc: float
    worst_case_acc: float
    per_attack: List[Dict[str, Any]]
    cascade: bool
    robust: np.ndarray = field(repr=False)
    implementation: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (the per-image verdicts are left out)."""
        return {
            "suite": self.suite,
            "label": self.label,
            "eps": self.eps,
            "attacks": self.attacks,
            "n": self.n,
            "clean_acc": self.clean_acc,
            "worst_case_acc": self.worst_case_acc,
            "per_attack": self.per_attack,
            "cascade": self.cascade,
            **({"implementation": self.implementation} if self.implementation else {}),
        }


def worst_case_accuracy(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    suite: AttackSuite | str,
    eps: Optional[float] = None,
    *,
    batch_size: int = 256,
    seed: int = 0,
    cascade: Optional[bool] = None,
) -> SuiteResult:
    """Per-attack and worst-case-per-image robust accuracy of ``model`` on ``(x, y)``.

    ``suite`` is an :class:`AttackSuite` or a registered name (then ``eps`` is required).
    Each attack gets its own generator seeded with ``seed``. With ``cascade=True`` each
    attack only attacks the images still robust after the ones before it (AutoAttack's
    order of work: the same worst case, faster, but no per-attack accuracy); None: the
    suite's own choice (``AttackSuite.cascade``).
    """
    if isinstance(suite, str):
        if eps is None:
            raise ValueError(f"suite '{suite}' given by name needs eps")
        suite = build_suite(suite, eps)
    elif eps is not None and eps != suite.eps:
        raise ValueError(f"eps {eps} disagrees with suite '{suite.name}' (eps {suite.eps})")
    cascade = suite.cascade if cascade is None else cascade
    # arrays and tensors become one tensor; a streamed view (training.tensors) is indexed
    xt = torch.as_tensor(x) if isinstance(x, (np.ndarray, torch.Tensor, list)) else x
    yt = torch.as_tensor(y).long()
    if len(xt) != len(yt) or len(xt) == 0:
        raise ValueError(f"need as many labels as images (> 0), got {len(xt)} and {len(yt)}")
    correct = (predict(model, xt) == yt).numpy()
    robust = correct.copy()
    rows: List[Dict[str, Any]] = []
    for spec in suite.specs:
        todo = np.flatnonzero(robust if cascade else correct)
        survived = _survivors(model, xt, yt, todo, spec, batch_size, seed)
        fails = np.zeros(len(xt), dtype=bool)  # True: this attack failed on the image
        fails[todo[survived]] = True
        row = {**_spec_row(spec), "acc": None if cascade else float(fails.mean())}
        row["broke"] = int((robust & ~fails).sum())
        robust &= fails
        rows.append(row)
    return SuiteResult(
        suite=suite.name,
        label=suite.label(),
        eps=suite.eps,
        attacks=[s.to_dict() for s in suite.specs],
        n=int(len(xt)),
        clean_acc=float(correct.mean()),
        worst_case_acc=float(robust.mean()),
        per_attack=rows,
        cascade=cascade,
        robust=robust,
        implementation=suite.implementation,
    )


def _survivors(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    idx: Sequence[int],
    spec: AttackSpec,
    batch_size: int,
    seed: int,
) -> np.ndarray:
    """Boolean array over ``idx``: True where the model still classifies the attacked image
    correctly."""
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return np.zeros(0, dtype=bool)
    attack = build_attack(model, spec, generator=torch.Generator().manual_seed(seed))
    out = []
    for i in range(0, len(idx), batch_size):
        sel = torch.from_numpy(idx[i : i + batch_size])
        xb, yb = x[sel], y[sel]
        x_adv = attack.perturb(xb, yb)
        out.append((predict(model, x_adv.cpu()) == yb).numpy())
    return np.concatenate(out)


def _spec_row(spec: AttackSpec) -> Dict[str, Any]:
    return spec.resolved().record()
