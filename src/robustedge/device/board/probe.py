"""What a board says about itself, read from /proc, /sys and ``vcgencmd``: stdlib only, no imports
from robustedge, so ``robustedge device doctor`` can send this file to a board's ``python3 -``
before numpy or a bundle is there.

``conditions()`` is the state that moves latency: CPU governor, current and maximum frequency,
temperatures and the Raspberry Pi's throttling flags. ``throttle_problems(before, after)`` says
what went wrong between two readings; ``facts(base)`` is everything the doctor checks.
"""

from __future__ import annotations

import glob
import importlib
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional

HOT_C = 80.0  # a Raspberry Pi starts to throttle at 80-85 C
# vcgencmd get_throttled bits: 0-3 happening now, 16-19 happened since boot.
THROTTLE_NOW = {0: "under-voltage", 1: "frequency capped", 2: "throttled", 3: "soft temp limit"}
THROTTLE_SINCE = {16 + bit: name for bit, name in THROTTLE_NOW.items()}
INTERPRETERS = ("ai_edge_litert", "tflite_runtime", "onnxruntime")


class ThrottledRun(RuntimeError):
    """The board throttled or changed frequency while it was timed (``--refuse-throttled``)."""


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _num(path: str) -> Optional[int]:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def cpufreq(sys_root: str = "/sys") -> Dict[str, Any]:
    """Governor(s) and frequencies (MHz) per CPU from cpufreq; empty lists when not exposed."""
    out: Dict[str, Any] = {"governors": [], "cur_mhz": [], "max_mhz": []}
    for d in sorted(glob.glob(f"{sys_root}/devices/system/cpu/cpu[0-9]*/cpufreq")):
        gov = _read(f"{d}/scaling_governor")
        cur, mx = _num(f"{d}/scaling_cur_freq"), _num(f"{d}/cpuinfo_max_freq")
        if gov and gov not in out["governors"]:
            out["governors"].append(gov)
        if cur is not None:
            out["cur_mhz"].append(round(cur / 1000, 1))
        if mx is not None:
            out["max_mhz"].append(round(mx / 1000, 1))
    return out


def temperatures(sys_root: str = "/sys") -> Dict[str, float]:
    """Thermal zone type -> degrees C."""
    temps: Dict[str, float] = {}
    for d in sorted(glob.glob(f"{sys_root}/class/thermal/thermal_zone*")):
        milli = _num(f"{d}/temp")
        if milli is not None:
            temps[_read(f"{d}/type") or os.path.basename(d)] = round(milli / 1000, 1)
    return temps


def vcgencmd_throttled() -> Optional[int]:
    """``vcgencmd get_throttled`` as an int (Raspberry Pi firmware), None elsewhere."""
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", out.stdout)
    return int(m.group(1), 16) if m else None


def conditions(sys_root: str = "/sys") -> Dict[str, Any]:
    """One reading of what moves latency; fields are None/empty where the board hides them."""
    freq = cpufreq(sys_root)
    temps = temperatures(sys_root)
    throttled = vcgencmd_throttled()
    return {
        "governors": freq["governors"],
        "cur_mhz": freq["cur_mhz"],
        "max_mhz": freq["max_mhz"],
        "temps_c": temps,
        "max_temp_c": max(temps.values()) if temps else None,
        "throttled": None if throttled is None else hex(throttled),
        "load_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def throttle_problems(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    """Why a timed run between two readings is suspect (empty list: nothing seen)."""
    problems: List[str] = []
    for reading in (before, after):
        flags = int(reading["throttled"], 16) if reading.get("throttled") else 0
        for bit, name in THROTTLE_NOW.items():
            if flags >> bit & 1 and f"throttled: {name}" not in problems:
                problems.append(f"throttled: {name}")
    b = int(before["throttled"], 16) if before.get("throttled") else 0
    a = int(after["throttled"], 16) if after.get("throttled") else 0
    for bit, name in THROTTLE_SINCE.items():
        if a >> bit & 1 and not b >> bit & 1:
            problems.append(f"{name} during the run")
    if before.get("cur_mhz") and after.get("cur_mhz") and before["cur_mhz"] != after["cur_mhz"]:
        problems.append(f"CPU frequency changed: {before['cur_mhz']} -> {after['cur_mhz']} MHz")
    hot = [r["max_temp_c"] for r in (before, after) if (r.get("max_temp_c") or 0) >= HOT_C]
    if hot:
        problems.append(f"board at {max(hot)} C (>= {HOT_C:g} C throttles a Raspberry Pi)")
    return problems


def module_version(name: str) -> Optional[str]:
    """``name.__version__`` if it imports, else None (any import failure counts as missing)."""
    try:
        mod = importlib.import_module(name)
    except Exception:  # a broken wheel is as missing as an absent one
        return None
    return str(getattr(mod, "__version__", "unknown"))


def free_mb(path: str) -> Optional[float]:
    """Free space on the file system that holds ``path`` (or its nearest existing parent)."""
    p = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(p) and p != os.path.dirname(p):
        p = os.path.dirname(p)
    try:
        return round(shutil.disk_usage(p).free / 2**20, 1)
    except OSError:
        return None


def facts(base: str = "robustedge") -> Dict[str, Any]:
    """Everything ``robustedge device doctor`` checks, as one JSON-able dict."""
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "machine": platform.machine(),
        "numpy": module_version("numpy"),
        "interpreters": {n: module_version(n) for n in INTERPRETERS},
        "base": base,
        "free_mb": free_mb(base),
        "conditions": conditions(),
        "model": device_model(),
    }


def device_model() -> Optional[str]:
    """The device tree's machine model (a Pi's board name; ``linux,dummy-virt`` in QEMU)."""
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        text = _read(path)
        if text:
            return text.rstrip("\x00")
    return None
