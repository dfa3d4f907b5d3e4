"""The parity gate: every artifact against PyTorch on the clean test split and the transfer set.

Float formats must reproduce the PyTorch logits: max |logit difference| on real inputs at most
``logit_tol * max(1, max |PyTorch logit|)``, ``logit_tol`` from the format's descriptor (1e-4
for ONNX; 1e-3 for TFLite float, whose TensorFlow kernels sum in another order). Int8 formats
may lose at most ``clean`` points of clean accuracy and ``robust`` points of transfer accuracy
(defaults :data:`CLEAN_MARGIN` and :data:`ROBUST_MARGIN`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict

import numpy as np

from robustedge.export.formats import FORMATS, is_quantized

CLEAN_MARGIN = 1.0  # allowed clean-accuracy loss of an int8 format, points
ROBUST_MARGIN = 2.0  # allowed transfer-accuracy loss of an int8 format, points


@dataclass(frozen=True)
class Margins:
    """Allowed accuracy loss in percentage points (clean, transfer/robust)."""

    clean: float = CLEAN_MARGIN
    robust: float = ROBUST_MARGIN

    def __post_init__(self) -> None:
        if not (self.clean >= 0 and self.robust >= 0):
            raise ValueError(f"margins must be >= 0, got clean={self.clean} robust={self.robust}")


def parity(
    fmt: str,
    logits_clean: np.ndarray,
    logits_adv: np.ndarray,
    torch_clean: np.ndarray,
    torch_adv: np.ndarray,
    y: np.ndarray,
    margins: Margins,
) -> Dict[str, Any]:
    """The parity record stored under ``artifacts[fmt]["parity"]`` in export.json."""
    acc = lambda logits: float((logits.argmax(1) == y).mean())  # noqa: E731
    diff = float(
        max(np.abs(logits_clean - torch_clean).max(), np.abs(logits_adv - torch_adv).max())
    )
    scale = float(max(1.0, np.abs(torch_clean).max(), np.abs(torch_adv).max()))
    rec: Dict[str, Any] = {
        "clean_acc": acc(logits_clean),
        "transfer_acc": acc(logits_adv),
        "torch_clean_acc": acc(torch_clean),
        "torch_transfer_acc": acc(torch_adv),
        "agreement_clean": float((logits_clean.argmax(1) == torch_clean.argmax(1)).mean()),
        "agreement_transfer": float((logits_adv.argmax(1) == torch_adv.argmax(1)).mean()),
        "max_abs_logit_diff": diff,
        "logit_scale": scale,
        "n": int(len(y)),
    }
    rec["clean_drop_pts"] = 100 * (rec["torch_clean_acc"] - rec["clean_acc"])
    rec["transfer_drop_pts"] = 100 * (rec["torch_transfer_acc"] - rec["transfer_acc"])
    gate = asdict(margins)
    ok = (
        rec["clean_drop_pts"] <= margins.clean + 1e-9
        and rec["transfer_drop_pts"] <= margins.robust + 1e-9
    )
    if not is_quantized(fmt):
        gate["max_abs_logit_diff"] = FORMATS[fmt].logit_tol * scale
        ok = ok and diff <= gate["max_abs_logit_diff"]
    rec["margins"] = gate
    rec["passed"] = bool(ok)
    return rec


def failure_message(fmt: str, rec: Dict[str, Any]) -> str:
    """One line naming the format and the numbers that broke the gate."""
    m = rec["margins"]
    msg = (
        f"parity gate failed for {fmt}: clean {100 * rec['clean_acc']:.2f}% vs PyTorch "
        f"{100 * rec['torch_clean_acc']:.2f}% (drop {rec['clean_drop_pts']:.2f} pt, allowed "
        f"{m['clean']:g}), transfer {100 * rec['transfer_acc']:.2f}% vs "
        f"{100 * rec['torch_transfer_acc']:.2f}% (drop {rec['transfer_drop_pts']:.2f} pt, "
        f"allowed {m['robust']:g})"
    )
    if "max_abs_logit_diff" in m:
        msg += (
            f", max |logit diff| {rec['max_abs_logit_diff']:.3g} "
            f"(allowed {m['max_abs_logit_diff']:.3g})"
        )
    return msg
