"""Helpers shared by the benchmark scripts: hardware line, result writing, tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Sequence

RESULTS = Path(__file__).resolve().parent / "results"


def hardware() -> Dict[str, object]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_result(name: str, payload: Dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def ensure_trained(out: Path, cfg: Any) -> Path:
    """Train ``cfg`` (a TrainConfig) into ``out`` unless a finished run is already there:
    the benchmarks' "train a teacher if missing"."""
    import shutil

    from robustedge.training.run import train_run

    if (out / "metrics.json").is_file() and (out / "model.safetensors").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    train_run(cfg, out)
    return out


def table(headers: Sequence[str], rows: List[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: object) -> str:
    return f"{c:.3f}" if isinstance(c, float) else str(c)


def loadavg() -> List[float]:
    """The 1, 5 and 15 minute load averages ([] where /proc/loadavg is unreadable): every
    measured JSON records the load it ran under (the 2-core VM is shared)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def commit() -> str:
    """The checkout's short commit hash ("" outside a git checkout)."""
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def jsonable(o: Any) -> Any:
    """``json.dumps(default=...)`` for results holding paths and dataclasses."""
    import dataclasses

    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)
