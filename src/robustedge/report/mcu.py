"""The report's MCU table: what the ``tflm`` target measured for each model (docs/mcu.md),
read from the results JSON only, and which MCU classes each model fits."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from robustedge.report.collect import RunInfo, device_label

# MCU classes the table marks: name -> (SRAM KiB for the arena, flash KiB for the model)
MCU_CLASSES: Dict[str, Tuple[int, int]] = {
    "256K SRAM / 1M flash": (256, 1024),
    "256K SRAM / 512K flash": (256, 512),
}
TITLE = "Microcontrollers: TFLM arena, flash, ops, robustness and Ethos-U estimates"
NOTE = (
    "Measured by the TensorFlow Lite Micro interpreter on the host (the tflm target). arena: "
    "the smallest tensor arena TFLM runs the model in (64-bit host build: a 32-bit MCU needs "
    "the same tensors and slightly smaller structs); flash: the int8 .tflite as a TFLM build "
    "stores it (LUT: with TFLM's lossless weight compression); robust: worst case per image "
    "of the PGD transfer set and Square run on TFLM; parity: images where TFLM and the TFLite "
    "interpreter agree on the class. Ethos-U columns are vela ESTIMATES (no NPU ran). fits: "
    "arena within the SRAM and plain flash within the flash of each class."
)
HEADER = [
    "model",
    "target",
    "arena bytes",
    "TFLM flash bytes",
    "LUT flash bytes",
    "ops",
    "clean %",
    "robust % (worst case)",
    "parity %",
    "Ethos-U est. ms / SRAM / flash",
    "fits",
]


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def fits(mcu: Dict[str, Any]) -> List[str]:
    """The MCU classes whose SRAM holds the arena and whose flash holds the plain model."""
    arena, flash = mcu["arena"]["arena_bytes"], mcu["flash"]["tflm_flash_bytes"]
    return [k for k, (s, f) in MCU_CLASSES.items() if arena <= s * 1024 and flash <= f * 1024]


def _row(name: str, d: Dict[str, Any]) -> List[str]:
    mcu = d["mcu"]
    par = [p["same_class"] for p in mcu.get("parity", {}).values() if isinstance(p, dict)]
    eth = mcu.get("ethos_u") or {}
    est = (
        f"{eth['time_ms']:.3f} / {eth['sram_bytes']:,} / {eth['flash_bytes']:,}"
        if "cycles" in eth
        else "-"
    )
    return [
        name,
        device_label(d),
        f"{mcu['arena']['arena_bytes']:,}",
        f"{mcu['flash']['tflm_flash_bytes']:,}",
        f"{mcu['flash']['lut_flash_bytes']:,}",
        mcu["ops"]["line"],
        _pct((d.get("accuracy") or {}).get("clean")),
        _pct((d.get("worst_case") or {}).get("acc")),
        _pct(min(par) if par else None),
        est,
        ", ".join(fits(mcu)) or "none",
    ]


def mcu_rows(runs: Sequence[RunInfo]) -> Optional[Tuple[List[str], List[List[str]]]]:
    """(header, rows) of the MCU table, or None when no run was benched on tflm."""
    rows = [_row(r.name, d) for r in runs for d in r.devices if isinstance(d.get("mcu"), dict)]
    return (HEADER, rows) if rows else None
