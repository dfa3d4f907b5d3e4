"""``robustedge device doctor TARGET``: check everything a board needs, with the fix for each.

The target's own ``python3`` runs ``probe.py`` (stdlib only, sent on stdin), so the doctor works
on a board that has nothing else yet; each check turns one fact into ok / warn / fail and the
exact command that fixes it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from robustedge.device.board import probe
from robustedge.device.host.targets import Target
from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

MIN_PYTHON = (3, 9)
MIN_FREE_MB = 100.0
OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def board_facts(target: Target) -> Dict[str, Any]:
    """Run ``probe.facts`` on the target; {} when it has no Python at all."""
    base = getattr(target, "base", "robustedge")
    source = Path(probe.__file__).read_text()
    source += f"\nimport json\nprint(json.dumps(facts({base!r})))\n"
    out = target.python_probe(source)
    if out is None:
        return {}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise RobustEdgeError(f"the board's probe printed no JSON: {out[-200:]!r}") from None


def diagnose(facts: Dict[str, Any], python: str = "python3") -> List[Check]:
    """Checks from the board's facts (see ``probe.facts``)."""
    if not facts:
        return [
            Check(
                "python",
                FAIL,
                f"no '{python}' on the board",
                "sudo apt install python3 (Raspberry Pi OS / Debian), or pass --python PATH",
            )
        ]
    checks = [_python(facts), _numpy(facts, python), _interpreter(facts, python)]
    checks += [_disk(facts), _governor(facts), _throttling(facts)]
    return checks


def _python(f: Dict[str, Any]) -> Check:
    ver = tuple(int(v) for v in f["python"].split(".")[:2])
    if ver < MIN_PYTHON:
        return Check(
            "python",
            FAIL,
            f"Python {f['python']} ({f['executable']}) is older than 3.9",
            "install Python >= 3.9 (Raspberry Pi OS bookworm ships 3.11)",
        )
    return Check("python", OK, f"Python {f['python']} on {f['machine']} ({f['executable']})")


def _numpy(f: Dict[str, Any], python: str) -> Check:
    if f.get("numpy"):
        return Check("numpy", OK, f"numpy {f['numpy']}")
    fix = f"{python} -m pip install numpy"
    if f["machine"].startswith("armv7"):
        fix = "sudo apt install python3-numpy (no armv7 numpy wheels on PyPI)"
    return Check("numpy", FAIL, "numpy does not import", fix)


def _interpreter(f: Dict[str, Any], python: str) -> Check:
    have = {k: v for k, v in (f.get("interpreters") or {}).items() if v}
    if have:
        return Check("interpreter", OK, ", ".join(f"{k} {v}" for k, v in sorted(have.items())))
    pkg = "tflite-runtime" if f["python"].startswith(("3.9", "3.10", "3.11")) else "ai-edge-litert"
    return Check(
        "interpreter",
        FAIL,
        "no ai-edge-litert, tflite-runtime or onnxruntime",
        f"{python} -m pip install {pkg}  (onnx bundles: onnxruntime)",
    )


def _disk(f: Dict[str, Any]) -> Check:
    free = f.get("free_mb")
    if free is None:
        return Check("disk", WARN, f"cannot read free space at {f['base']}")
    if free < MIN_FREE_MB:
        return Check(
            "disk",
            FAIL,
            f"{free:.0f} MiB free at {f['base']} (< {MIN_FREE_MB:.0f} MiB)",
            "free space there (e.g. sudo apt clean) or deploy elsewhere: --target ssh://user@host/PATH",
        )
    return Check("disk", OK, f"{free:.0f} MiB free at {f['base']}")


GOVERNOR_FIX = "echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"


def _governor(f: Dict[str, Any]) -> Check:
    c = f.get("conditions") or {}
    govs = c.get("governors") or []
    if not govs:
        return Check("governor", WARN, "no cpufreq on this board (VM/container): not recorded")
    if govs != ["performance"]:
        return Check(
            "governor",
            FAIL,
            f"governor {'/'.join(govs)}: latency moves with the CPU frequency",
            GOVERNOR_FIX,
        )
    mhz = c.get("cur_mhz") or []
    return Check("governor", OK, f"performance ({max(mhz) if mhz else '?'} MHz)")


def _throttling(f: Dict[str, Any]) -> Check:
    c = f.get("conditions") or {}
    problems = probe.throttle_problems(c, c)
    if problems:
        return Check(
            "throttling",
            FAIL,
            "; ".join(problems),
            "cool the board (heatsink/fan), use the rated power supply (Pi 4: 5.1 V 3 A), "
            "then check `vcgencmd get_throttled` reads 0x0",
        )
    temp = c.get("max_temp_c")
    seen = []
    if temp is not None:
        seen.append(f"{temp} C")
    if c.get("throttled") is not None:
        seen.append(f"get_throttled={c['throttled']}")
    if not seen:
        return Check("throttling", WARN, "no thermal zones or vcgencmd: not recorded")
    return Check("throttling", OK, ", ".join(seen))
