"""`ExportConfig`: the frozen, self-validating settings of one export (`export_run`).

Every field is a :func:`~robustedge.config.setting` with its one default and help text: the
``robustedge export`` options and the recipe's ``export:`` keys are generated from it (the
recipe's ``seed`` fills ``seed``). Formats are names from ``FORMATS``; the transfer set's PGD
steps and restarts default to the PGD attack's own evaluation defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple, Union

from robustedge.attacks import AttackSpec
from robustedge.config import ConfigMixin, FieldError, setting
from robustedge.errors import RobustEdgeError
from robustedge.export.evalsets import DEFAULT_CALIB_SAMPLES
from robustedge.export.formats import FORMATS, check_format, parse_formats, split_formats
from robustedge.export.parity import CLEAN_MARGIN, ROBUST_MARGIN, Margins

_PGD = AttackSpec.default("pgd")  # the evaluation defaults of PGD: the transfer set's


@dataclass(frozen=True)
class ExportConfig(ConfigMixin):
    """How a run is exported and checked (see :func:`robustedge.export.export_run`)."""

    formats: Tuple[str, ...] = setting(
        ("onnx", "tflite-float32", "tflite-int8"),
        help="Comma list of: {choices} (ONNX is always made: the others come from it).",
        choices=FORMATS.names,
        metavar="LIST",
    )
    calib_samples: int = setting(
        DEFAULT_CALIB_SAMPLES, help="Training inputs used to calibrate int8 formats."
    )
    calib_adv_fraction: float = setting(
        0.0, help="Fraction of calibration inputs replaced by their PGD versions."
    )
    clean_margin: float = setting(
        CLEAN_MARGIN, help="Allowed clean-accuracy loss of int8 formats, in points."
    )
    robust_margin: float = setting(
        ROBUST_MARGIN, help="Allowed transfer (robust) accuracy loss of int8 formats, in points."
    )
    parity: bool = setting(
        True, help="Run the parity gate on every format (ONNX is always checked against PyTorch)."
    )
    transfer_steps: int = setting(
        _PGD.steps, help="PGD steps of the transfer set (the test split attacked on PyTorch)."
    )
    transfer_restarts: int = setting(_PGD.restarts, help="PGD restarts of the transfer set.")
    eval_images: int = setting(
        10_000,
        help="Test images in the evaluation and transfer sets (and so the bundle): a fixed, "
        "seeded draw when the test split is larger.",
    )
    seed: int = setting(0, help="Random seed (calibration draw, transfer-set attack).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", _format_names(self.formats))
        for key in ("clean_margin", "robust_margin"):
            value = getattr(self, key)
            if not (value >= 0):
                raise FieldError(key, f"{key} must be >= 0 (accuracy points), got {value}")
        if self.calib_samples < 1:
            raise FieldError(
                "calib_samples", f"calib_samples must be >= 1, got {self.calib_samples}"
            )
        if not (0 <= self.calib_adv_fraction <= 1):
            raise FieldError(
                "calib_adv_fraction",
                f"calib_adv_fraction must lie in [0, 1], got {self.calib_adv_fraction}",
            )
        for key in ("transfer_steps", "transfer_restarts", "eval_images"):
            if getattr(self, key) < 1:
                raise FieldError(key, f"{key} must be >= 1, got {getattr(self, key)}")

    def made(self) -> Tuple[str, ...]:
        """The formats actually produced, in build order (onnx first: the others come from it)."""
        return tuple(parse_formats(self.formats))

    def margins(self) -> Margins:
        """The int8 parity margins (clean, robust), in accuracy points."""
        return Margins(self.clean_margin, self.robust_margin)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ExportConfig:
        return super().from_dict(d)


def _format_names(formats: Union[Sequence[str], str]) -> Tuple[str, ...]:
    """The formats given (a comma list or a sequence), each a registered name."""
    listed = isinstance(formats, (list, tuple)) and all(isinstance(n, str) for n in formats)
    if not (listed or isinstance(formats, str)):
        raise FieldError("formats", f"formats must be a list of names, got {formats!r}")
    names = split_formats(formats)
    for i, name in enumerate(names):
        try:
            check_format(name)
        except RobustEdgeError as e:
            raise FieldError(f"formats[{i}]", str(e)) from None
    return tuple(names)
