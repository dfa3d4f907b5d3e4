"""Ethos-U estimates: Arm's vela compiler (pip ``ethos-u-vela``) on an int8 TFLite model.

vela compiles the model for a named Ethos-U NPU configuration (``ethos-u55-128`` ...) with its
default system configuration and memory mode, and writes a summary: SRAM and flash the compiled
model uses, and its *estimated* cycles and inference time at the configured clock (vela's
performance model, no hardware ran). Operators vela leaves to the CPU are named. vela runs in a
child process (it can crash on a model it does not expect, and that must not take the caller
down).
"""

from __future__ import annotations

import csv
import logging
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

PIP_NAME = "ethos-u-vela"
DEFAULT_ACCELERATOR = "ethos-u55-128"
TIMEOUT_S = 600
_CPU_OP = re.compile(r"^Warning \(supported operators\) operator: ([A-Z0-9_]+)")


def accelerators() -> List[str]:
    """The Ethos-U configurations vela knows (empty when vela is not installed)."""
    try:
        from ethosu.vela.architecture_features import Accelerator
    except ImportError:
        return []
    return [a.value for a in Accelerator]


def vela_version() -> str:
    from importlib.metadata import version

    return version(PIP_NAME)


def check_accelerator(name: str) -> None:
    """RobustEdgeError (one line) unless vela is installed and knows ``name``."""
    known = accelerators()
    if not known:
        raise RobustEdgeError(f"Ethos-U estimates need vela: pip install {PIP_NAME}")
    if name not in known:
        raise RobustEdgeError(f"unknown Ethos-U configuration '{name}' (known: {', '.join(known)})")


def estimate(model: Path, accelerator: str = DEFAULT_ACCELERATOR) -> Dict[str, Any]:
    """Compile the int8 ``model`` with vela for ``accelerator``: SRAM and flash bytes, the
    estimated cycles and milliseconds per inference, and the operators left to the CPU."""
    check_accelerator(accelerator)
    with tempfile.TemporaryDirectory(prefix="robustedge-vela-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "ethosu.vela",
            "--accelerator-config",
            accelerator,
            "--output-dir",
            tmp,
            str(model),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RobustEdgeError(f"vela took more than {TIMEOUT_S} s on {model.name}") from None
        summaries = sorted(Path(tmp).glob("*_summary_*.csv"))
        if proc.returncode != 0 or not summaries:
            why = (proc.stderr or proc.stdout).strip().splitlines()
            last = why[-1] if why else f"exit {proc.returncode}"
            raise RobustEdgeError(f"vela failed on {model.name}: {last}")
        with open(summaries[0], newline="") as f:
            row = next(csv.DictReader(f))
    return summary(row, proc.stderr + proc.stdout, accelerator)


def summary(row: Dict[str, str], log: str, accelerator: str) -> Dict[str, Any]:
    """vela's summary CSV row and its log as the estimate robustedge records."""
    cpu: Dict[str, int] = {}
    for line in log.splitlines():
        m = _CPU_OP.match(line.strip())
        if m:
            cpu[m.group(1)] = cpu.get(m.group(1), 0) + 1
    clock = float(row["core_clock"])
    kib = 1024.0
    flash = float(row["off_chip_flash_memory_used"]) + float(row["on_chip_flash_memory_used"])
    cycles = int(float(row["cycles_total"]))
    return {
        "accelerator": accelerator,
        "system_config": row["system_config"],
        "memory_mode": row["memory_mode"],
        "clock_mhz": clock / 1e6,
        "sram_bytes": int(round(float(row["sram_memory_used"]) * kib)),
        "flash_bytes": int(round(flash * kib)),
        "cycles": cycles,
        "time_ms": round(cycles / clock * 1e3, 6),
        "macs": int(float(row["nn_macs"])),
        "cpu_ops": cpu,
        "vela": vela_version(),
        "label": f"estimate: vela {vela_version()} performance model, {accelerator} "
        f"({row['system_config']}, {row['memory_mode']}) at {clock / 1e6:g} MHz; no NPU ran",
    }
