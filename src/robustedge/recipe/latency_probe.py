"""Latency of a candidate student on a device target, for ``--budget latency_ms=...``.

A candidate (a shrunk copy of the teacher) becomes a throw-away run folder, is exported to the
benchmark format (int8 TFLite by default; parity gate off: only its speed is asked here), put
in a bundle and run by the unchanged board runner on the target, which returns its p50. This
composes export and device, so it lives above both (the budget search in
:mod:`robustedge.compress.budget` only sees a ``model -> float`` function).

Emulated targets are refused: emulated latency is 7-150x off and says nothing about a board.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

BENCH_FORMAT = "tflite-int8"
PROBE_RUNS = 200  # the runner's minimum number of timed invokes


def refuse_emulated(target: str, emulated: bool = False) -> None:
    """One-line RobustEdgeError when ``target`` is emulated (a ``qemu-*`` userland or a
    ``vm-*`` full-system VM)."""
    if emulated or target.startswith(("qemu-", "vm-")):
        raise RobustEdgeError(
            f"latency budgets cannot be measured on {target}: it is emulated, and emulated "
            "latency says nothing about a board (use local or ssh://user@host)"
        )


def latency_probe(
    target: str, ssh_options: Sequence[str] = (), **kw: Any
) -> Callable[[Any, str, Optional[str]], Callable[[Any], float]]:
    """``(teacher spec, data name, data folder) -> measure`` for ``compress_to_budget``;
    refuses an emulated ``target`` now, before anything is trained. ``kw`` go to
    :func:`latency_measure`."""
    refuse_emulated(target)

    def factory(spec: Any, data_name: str, data_dir: Optional[str]) -> Callable[[Any], float]:
        return latency_measure(target, spec, data_name, data_dir, ssh_options=ssh_options, **kw)

    return factory


def latency_measure(
    target: str,
    spec: Any,
    data_name: str,
    data_dir: Optional[str] = None,
    fmt: str = BENCH_FORMAT,
    runs: int = PROBE_RUNS,
    threads: int = 1,
    ssh_options: Sequence[str] = (),
) -> Callable[[Any], float]:
    """``model -> p50 ms`` of one inference of ``model`` (architecture ``spec``, possibly
    shrunk) on ``target``, as the board runner measures it (``fmt``, ``threads``)."""
    from robustedge.device.targets import make_target

    refuse_emulated(target)
    board = make_target(target, ssh_options=list(ssh_options))
    refuse_emulated(board.name, board.emulated)

    def measure(model: Any) -> float:
        from robustedge.device.bundle import build_bundle
        from robustedge.export.probe import export_model

        tmp = Path(tempfile.mkdtemp(prefix="robustedge-probe-"))
        try:
            export_model(model, spec, data_name, data_dir, fmt, tmp)
            bundle = build_bundle(tmp / "candidate", tmp / "bundle", [fmt])
            args = ["--format", fmt, "--threads", str(threads), "--runs", str(runs)]
            results = board.bench(bundle, args + ["--square-queries", "0"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        latency = results.get("latency") or {}
        if "p50_ms" not in latency:
            raise RobustEdgeError(f"{target} returned no latency for the candidate")
        return float(latency["p50_ms"])

    return measure
