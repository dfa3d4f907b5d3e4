"""`CompressConfig` and the pruning-method registry: one frozen config per `robustedge compress`.

The config holds the settings every method shares (teacher, sparsity, adversary, KD, epochs,
...) and, in ``options``, the chosen method's own settings: a small frozen
:class:`MethodOptions` dataclass that the method registers with itself
(:func:`register_method`). ``PRUNERS`` maps each method's name to a :class:`Pruner`: its prune
function, its options class, what it supports (structured pruning, weight perturbation) and its
defaults for shared settings (HYDRA trains with TRADES, prox distils). The registry is the only
list of methods: the command line, the recipe and the benchmarks read it.

The flat form stays: :meth:`CompressConfig.to_dict` writes the shared settings and the method's
options as one mapping (config.yaml), and :meth:`CompressConfig.from_keys` /
:meth:`CompressConfig.from_dict` route each flat key to its owner. A key of another method is
refused, unless it holds that option's default (config.yaml files written before the split
hold every method's keys).
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Type

from robustedge.attacks import DEFAULT_EPS
from robustedge.compress.distill import KDTarget
from robustedge.config import (
    ConfigMixin,
    FieldError,
    Optim,
    check_positive,
    default_of,
    enum_value,
    plain,
    setting,
)
from robustedge.devices import DEVICES, check_device
from robustedge.errors import UnknownNameError
from robustedge.registry import Registry
from robustedge.training.adversaries import ADVERSARIES, TRADES_BETA, TRAIN_STEPS


class Scope(str, enum.Enum):
    GLOBAL = "global"
    LAYER = "layer"
    ERK = "erk"  # per layer, Erdos-Renyi-Kernel budgets (unstructured only)


# Shared settings a method may give its own default (Pruner.defaults), and the default of the
# methods that do not: PGD adversarial training, no distillation.
METHOD_DEFAULTS: Mapping[str, Any] = MappingProxyType({"adversary": "pgd", "kd_alpha": 0.0})


def positive(obj: Any, *names: str) -> None:
    """:func:`~robustedge.config.check_positive` as a FieldError naming the field."""
    for n in names:
        try:
            check_positive(obj, n)
        except ValueError as e:
            raise FieldError(n, str(e)) from None


@dataclass(frozen=True)
class MethodOptions(ConfigMixin):
    """A pruning method's own settings (fields declared with ``setting``); this base class,
    with no fields, is the options of a method that has none. Subclasses validate their
    fields in ``__post_init__`` (FieldError naming the field)."""

    def check(self, cfg: CompressConfig) -> None:
        """Checks against the shared settings (e.g. sparsity, structured); none by default."""

    def unused(self) -> FrozenSet[str]:
        """The options this setting never reads (e.g. ADMM's rho without prox's ADMM warm
        start): benchmark caches ignore them."""
        return frozenset()


@dataclass(frozen=True)
class Pruner:
    """A registered pruning method: ``prune(ctx) -> PruneOutcome``, its options class, whether
    it can prune channels (``structured``) and train under weight perturbation (``awp``: its
    pruning phase trains weights), and its ``defaults`` for shared settings (keys of
    ``METHOD_DEFAULTS``). Calling it runs ``prune``."""

    prune: Callable[[Any], Any]
    options: Type[MethodOptions] = MethodOptions
    structured: bool = False
    awp: bool = True
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = sorted(set(self.defaults) - set(METHOD_DEFAULTS))
        if bad:
            raise ValueError(
                f"a method may set defaults for {', '.join(METHOD_DEFAULTS)} only, not {bad[0]}"
            )
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    def __call__(self, ctx: Any) -> Any:
        return self.prune(ctx)

    def default(self, name: str) -> Any:
        """This method's default for shared setting ``name`` (a key of METHOD_DEFAULTS)."""
        return self.defaults.get(name, METHOD_DEFAULTS[name])


PRUNERS: Registry[Pruner] = Registry("pruning method")


def register_method(
    name: str,
    *,
    options: Type[MethodOptions] = MethodOptions,
    structured: bool = False,
    awp: bool = True,
    defaults: Optional[Mapping[str, Any]] = None,
) -> Callable:
    """Decorator: register ``prune(ctx) -> PruneOutcome`` as pruning method ``name`` (see
    :class:`Pruner`). The options' field names must not be shared settings, and an option
    that another method also has must have the same type and default there."""

    def deco(prune: Callable) -> Callable:
        check_options(options)
        PRUNERS.register(name, Pruner(prune, options, structured, awp, defaults or {}))
        return prune

    return deco


def check_options(cls: Type[MethodOptions]) -> None:
    """ValueError unless options class ``cls`` fits beside the shared settings and the
    registered methods' options (every option has a default; one type and one default per
    option name)."""
    if not (isinstance(cls, type) and issubclass(cls, MethodOptions)):
        raise ValueError(f"a method's options must subclass MethodOptions, got {cls!r}")
    shared = {f.name for f in fields(CompressConfig)}
    known = option_fields()
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in shared:
            raise ValueError(f"option '{f.name}' of {cls.__name__} is a shared setting")
        if default_of(cls, f.name) is dataclasses.MISSING:
            raise ValueError(f"option '{f.name}' of {cls.__name__} needs a default")
        if f.name in known:
            owner, other = known[f.name]
            if hints[f.name] != typing.get_type_hints(owner)[f.name] or default_of(
                cls, f.name
            ) != default_of(owner, f.name):
                raise ValueError(
                    f"option '{f.name}' of {cls.__name__} differs from {owner.__name__}'s "
                    "(type or default)"
                )


def option_fields() -> Dict[str, tuple]:
    """{option name: (options class, field)} over the registered methods (the first owner)."""
    out: Dict[str, tuple] = {}
    for _, pruner in PRUNERS.items():
        for f in fields(pruner.options):
            out.setdefault(f.name, (pruner.options, f))
    return out


def option_owners() -> Dict[str, List[str]]:
    """{option name: the methods that have it} over the registered methods."""
    out: Dict[str, List[str]] = {}
    for name, pruner in PRUNERS.items():
        for f in fields(pruner.options):
            out.setdefault(f.name, []).append(name)
    return out


def flat_key_types() -> Dict[str, Any]:
    """{flat key: type hint}: the shared settings and every registered method's options
    (the keys of config.yaml and of a recipe's compress entry)."""
    hints = typing.get_type_hints(CompressConfig)
    out = {f.name: hints[f.name] for f in fields(CompressConfig) if f.name != "options"}
    for name, (cls, _) in option_fields().items():
        out[name] = typing.get_type_hints(cls)[name]
    return out


def method_defaults_help(name: str) -> str:
    """``[default: pgd; trades for hydra]``: the default of shared setting ``name`` (a key of
    METHOD_DEFAULTS) and the registered methods' own (for help texts)."""
    own = [f"{p.defaults[name]} for {m}" for m, p in PRUNERS.items() if name in p.defaults]
    return f"[default: {METHOD_DEFAULTS[name]}" + "".join(f"; {o}" for o in own) + "]"


@dataclass(frozen=True)
class CompressConfig(ConfigMixin):
    """Everything `robustedge compress` needs; the resolved copy is saved as config.yaml.

    ``adversary=None`` / ``kd_alpha=None`` resolve to the method's default (``Pruner``:
    PGD, and TRADES for HYDRA; KD weight 0.5 for prox, 0 for the baselines). ``data=None``
    takes the teacher's. ``options=None``: the method's options at their defaults.

    The prox defaults (L0 top-k penalty, lazy prox, KD at T=1 from the teacher's answer on the
    clean image) and batch 16 are the setting that measured most robust at 90, 95 and 99 %
    sparsity (worst case of PGD-20x5 / APGD-CE / APGD-DLR, 3 seeds, LeNet-5 on digits;
    docs/compression-diagnosis.md sections 4 and 8). The paper-1 setting is ``penalty="reweighted",
    lazy_prox=False, kd_temp=4, kd_target="adv"``.
    """

    teacher: str = setting(help="Run folder of the (robust) teacher.")
    method: str = setting("prox", help="Pruning method: {choices}.", choices=PRUNERS.names)
    sparsity: float = setting(
        0.9,
        help="Fraction of prunable weights to remove, in [0, 1) (of output channels with "
        "--structured).",
    )
    structured: bool = setting(
        False, help="Group lasso over output channels, then physical channel removal."
    )
    scope: Optional[Scope] = setting(
        None,
        help="Rank weights across or per layer (erk: per layer with Erdos-Renyi-Kernel "
        "budgets) [default: global; layer with --structured].",
    )
    adversary: Optional[str] = setting(
        None, help="Training adversary: {choices}.", choices=ADVERSARIES.names
    )
    adversary_opts: Dict[str, Any] = setting(
        default_factory=dict,
        cli="--adversary-opt",
        help="Extra adversary option (repeatable), e.g. manifold=RUN.",
    )
    eps: float = setting(DEFAULT_EPS, help="Linf budget.")
    steps: int = setting(TRAIN_STEPS, help="Adversary steps.")
    trades_beta: float = setting(TRADES_BETA, help="TRADES' trade-off weight beta.")
    awp_gamma: float = setting(
        0.0,
        help="Adversarial weight perturbation (Wu et al. 2020) of relative size gamma, e.g. "
        "0.005, on top of the adversary, both phases (0: off; it lowered robust accuracy on "
        "digits).",
    )
    kd_alpha: Optional[float] = setting(None, help="Distillation weight a in [0, 1].")
    kd_temp: float = setting(1.0, help="Distillation temperature.")
    kd_target: KDTarget = setting(
        KDTarget.CLEAN,
        help="With --kd-alpha > 0 (any method): the teacher answers on the student's "
        "adversarial example (adv) or on the clean image (clean: robust soft labels, ARD/RSLAD).",
    )
    epochs: int = setting(10, help="Pruning-phase epochs.")
    finetune_epochs: int = setting(
        5, help="Masked fine-tune epochs (magnitude fine-tunes for epochs + these)."
    )
    batch_size: int = setting(
        16,
        help="Global batch. On small data sets the optimizer steps, not the epochs, limit the "
        "student: 16 instead of 64 gave every method 2-15 points of worst-case accuracy on "
        "digits for about 2.2x the time (README); on large data sets 64-128 is enough.",
    )
    lr: float = setting(1e-3, help="Learning rate.")
    optimizer: Optim = setting(Optim.ADAM, help="Optimizer.")
    ema_decay: float = setting(
        0.0,
        help="Masked fine-tune: keep an EMA of the weights with this decay, in [0, 1) "
        "(0: off); the average is the student.",
    )
    layer_sparsity: Dict[str, float] = setting(
        default_factory=dict,
        cli="--layer-sparsity",
        help="Structured, per layer: fraction of its output channels to remove "
        "(LAYER=FRACTION, repeatable; a budget's width search writes it) instead of "
        "--sparsity in every layer; --sparsity stays the overall channel fraction.",
    )
    include_first: bool = setting(False, help="Also prune the first conv.")
    include_last: bool = setting(False, help="Also prune the final linear layer.")
    model: Optional[str] = setting(
        None, help="Student model [default: the teacher's, initialised from its weights]."
    )
    model_kwargs: Dict[str, Any] = setting(
        default_factory=dict,
        cli="--model-arg",
        help="Student model factory argument (repeatable), e.g. width=2.",
    )
    data: Optional[str] = setting(None, help="Data set [default: the teacher's].")
    data_dir: Optional[str] = setting(None, help="Folder with local data files.")
    seed: int = setting(0, help="Random seed (weights, batches, attacks).")
    device: str = setting("auto", help="Where to train: {choices}.", choices=lambda: DEVICES)
    options: Optional[MethodOptions] = setting(
        None, cli=False, help="The method's own options [default: its defaults]."
    )

    def __post_init__(self) -> None:
        pruner = _pruner(self.method)
        self._resolve(pruner)
        self._check_ranges()
        if self.structured and not pruner.structured:
            able = " and ".join(m for m, p in PRUNERS.items() if p.structured)
            raise FieldError("structured", f"--structured is implemented for --method {able} only")
        if self.awp_gamma > 0 and not pruner.awp:
            raise FieldError(
                "awp_gamma",
                f"awp_gamma perturbs weights; method {self.method} trains none in its "
                "pruning phase",
            )
        if self.layer_sparsity:
            self._check_layer_sparsity(pruner)
        if self.structured and self.scope is Scope.ERK:
            raise FieldError("scope", "--scope erk is for unstructured pruning only")
        self.options.check(self)

    def _check_layer_sparsity(self, pruner: Pruner) -> None:
        """Per-layer fractions: structured, ranked per layer, each in [0, 1)."""
        if not self.structured or self.scope is not Scope.LAYER:
            raise FieldError("layer_sparsity", "layer_sparsity needs --structured --scope layer")
        for name, frac in self.layer_sparsity.items():
            if not (isinstance(frac, (int, float)) and 0.0 <= float(frac) < 1.0):
                raise FieldError(
                    "layer_sparsity", f"layer_sparsity of {name} must lie in [0, 1), got {frac}"
                )

    def _resolve(self, pruner: Pruner) -> None:
        """Enums from strings, the method's defaults and its options filled in."""
        scope = self.scope or (Scope.LAYER if self.structured else Scope.GLOBAL)
        object.__setattr__(self, "scope", _enum(Scope, scope, "scope"))
        object.__setattr__(self, "optimizer", _enum(Optim, self.optimizer, "optimizer"))
        object.__setattr__(self, "kd_target", _enum(KDTarget, self.kd_target, "kd_target"))
        for name in METHOD_DEFAULTS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, pruner.default(name))
        if self.options is None:
            object.__setattr__(self, "options", pruner.options())
        elif type(self.options) is not pruner.options:
            raise FieldError(
                "options",
                f"options {type(self.options).__name__} are not method {self.method}'s "
                f"({pruner.options.__name__})",
            )

    def _check_ranges(self) -> None:
        """The shared settings' own ranges (FieldError naming the setting)."""
        if not self.teacher:
            raise FieldError("teacher", "a teacher run folder is required")
        for key, check in (("adversary", ADVERSARIES.get), ("device", check_device)):
            try:
                check(getattr(self, key))
            except (UnknownNameError, ValueError) as e:
                raise FieldError(key, str(e)) from None
        if not (0.0 <= self.sparsity < 1.0):
            raise FieldError("sparsity", f"sparsity must lie in [0, 1), got {self.sparsity}")
        if not (0.0 <= self.kd_alpha <= 1.0):
            raise FieldError("kd_alpha", f"kd alpha must lie in [0, 1], got {self.kd_alpha}")
        positive(self, "epochs", "batch_size", "lr", "kd_temp")
        for name in ("finetune_epochs", "steps", "trades_beta"):
            if getattr(self, name) < 0:
                raise FieldError(name, "finetune_epochs, steps and trades_beta must be >= 0")
        if not (self.eps >= 0) or self.eps > 1:
            raise FieldError("eps", f"eps must lie in [0, 1] (pixel units), got {self.eps}")
        if self.adversary != "none" and self.eps == 0:
            raise FieldError("eps", f"adversary '{self.adversary}' needs eps > 0")
        for name in ("ema_decay", "awp_gamma"):
            if not (0.0 <= getattr(self, name) < 1.0):
                raise FieldError(
                    name, f"{name} must lie in [0, 1) (0: off), got {getattr(self, name)}"
                )

    @property
    def pruner(self) -> Pruner:
        """The registered method this config runs."""
        return PRUNERS.get(self.method)

    def to_dict(self) -> Dict[str, Any]:
        """The flat form (config.yaml): shared settings and the method's options, one level."""
        d = {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name != "options"}
        d.update(self.options.to_dict())  # type: ignore[union-attr]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompressConfig:
        """The config of a flat mapping (config.yaml, a recipe entry): see :meth:`from_keys`."""
        return cls.from_keys(**d)

    @classmethod
    def from_keys(cls, **keys: Any) -> CompressConfig:
        """The config of flat keyword settings: shared settings by name, the method's options
        routed into ``options`` (on top of an ``options`` object if one is given). A key of
        another method is refused, unless it holds that option's default; an unknown key is
        refused."""
        shared = {f.name for f in fields(cls)}
        given = {k: v for k, v in keys.items() if k in shared}
        rest = {k: v for k, v in keys.items() if k not in shared}
        method = given.get("method", default_of(cls, "method"))
        pruner = _pruner(method)
        mine = _own_options(pruner, method, rest)
        options = given.pop("options", None)
        if mine:
            if options is None:
                options = pruner.options(**mine)
            elif type(options) is pruner.options:
                options = dataclasses.replace(options, **mine)
        return cls(**given, options=options)

    def unused_keys(self) -> FrozenSet[str]:
        """Flat keys this run never reads: every other method's options and those of its own
        that this setting ignores."""
        others = set(option_owners()) - {f.name for f in fields(self.pruner.options)}
        return frozenset(others | set(self.options.unused()))  # type: ignore[union-attr]


def _pruner(method: Any) -> Pruner:
    try:
        return PRUNERS.get(method)
    except UnknownNameError as e:
        raise FieldError("method", str(e)) from None


def _enum(cls: Any, value: Any, key: str) -> Any:
    try:
        return enum_value(cls, value, key.replace("_", " "))
    except ValueError as e:
        raise FieldError(key, str(e)) from None


def _own_options(pruner: Pruner, method: str, rest: Mapping[str, Any]) -> Dict[str, Any]:
    """The keys of ``rest`` that are ``pruner``'s options; the others must be other methods'
    options at their defaults (one-line FieldError otherwise)."""
    own = {f.name for f in fields(pruner.options)}
    owners = option_owners()
    unknown = sorted(k for k in rest if k not in owners)
    if unknown:
        raise FieldError(unknown[0], f"unknown config keys: {', '.join(unknown)}")
    for k, v in rest.items():
        if k in own:
            continue
        cls, f = option_fields()[k]
        if v != default_of(cls, k):
            who = owners[k]
            noun = "method" if len(who) == 1 else "methods"
            raise FieldError(k, f"{k} is an option of {noun} {', '.join(who)}, not {method}")
    return {k: v for k, v in rest.items() if k in own}
