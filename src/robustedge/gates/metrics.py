"""What a gate can measure: the ``METRICS`` registry (the only list of metric names).

Each metric says how to read itself from the three kinds of measurement robustedge writes:

- ``board``: a board's ``results.json`` (``robustedge bench``, a recipe's
  ``device/<target>/results.json``; :class:`robustedge.device.board.measure.Measurements`);
- ``host``: a run folder's PyTorch evaluation and export (``metrics.json``, ``eval.json``,
  ``export/export.json``, ``export/ledger.json``, read by :mod:`robustedge.report.collect`);
- ``bundle``: a bundle's ``manifest.json`` (sizes and the export's parity figures).

An extractor returns a :class:`Measured` (value, what it is, images) or None when that source
does not hold the metric. ``p50_vs_teacher`` is computed across subjects (the teacher on the
same target in the same run): :mod:`robustedge.gates.subjects`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Union

from robustedge.registry import Registry

KIB = 1024.0  # flash_kb / model_kb are KiB, as the compression budget's flash_kb


@dataclass(frozen=True)
class Measured:
    """One measured value, what it is (``label``: the attack and its settings for robust
    metrics) and on how many images (accuracies)."""

    value: Union[float, str]
    label: str = ""
    n: Optional[int] = None


@dataclass
class Source:
    """What one subject was read from (only the parts its kind has are set)."""

    kind: str  # board | host | bundle
    results: Optional[Dict[str, Any]] = None  # board results.json
    run: Any = None  # robustedge.report.collect.RunInfo (host; board results inside a run)
    manifest: Optional[Dict[str, Any]] = None  # bundle manifest.json
    format: Optional[str] = None


Extract = Callable[[Source], Optional[Measured]]


@dataclass(frozen=True)
class Metric:
    """A gateable quantity: its help, unit, direction and how each source holds it."""

    help: str
    unit: str = ""
    board: Optional[Extract] = None
    host: Optional[Extract] = None
    bundle: Optional[Extract] = None
    higher_is_better: bool = True
    accuracy: bool = False  # a fraction of images (regressions use a statistical test)
    pass_fail: bool = False
    exact: bool = False  # may be compared with = / != (counts, sizes)
    absolute_latency: bool = False  # refused on emulated targets
    relative: bool = False  # computed across subjects (p50_vs_teacher)

    def extract(self, src: Source) -> Optional[Measured]:
        fn = getattr(self, src.kind, None)
        return fn(src) if fn is not None else None


METRICS: Registry[Metric] = Registry("metric")


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _board_acc(name: str) -> Extract:
    def get(src: Source) -> Optional[Measured]:
        r = src.results or {}
        v = _num((r.get("accuracy") or {}).get(name))
        if v is None:
            return None
        label = name
        if name == "transfer":
            label = ((r.get("worst_case") or {}).get("transfer_name")) or "PGD transfer"
        return Measured(v, label, (r.get("n_eval") or {}).get(name))

    return get


def _board_robust(src: Source) -> Optional[Measured]:
    wc = (src.results or {}).get("worst_case") or {}
    v = _num(wc.get("acc"))
    if v is None:
        return None
    label = str(wc.get("label", "worst case per image"))
    if wc.get("weaker"):
        label += f"; {wc['weaker']}"
    return Measured(v, label, wc.get("n"))


def _board_square(src: Source) -> Optional[Measured]:
    rows = (src.results or {}).get("robust") or []
    row = rows[0] if rows and isinstance(rows[0], dict) else {}
    v = _num(row.get("acc"))
    if v is None:
        return None
    return Measured(v, f"{row.get('name', 'Square')} on-board, eps {row.get('eps')}", row.get("n"))


def _board_latency(key: str) -> Extract:
    def get(src: Source) -> Optional[Measured]:
        r = src.results or {}
        v = _num((r.get("latency") or {}).get(key))
        return None if v is None else Measured(v, "emulated" if r.get("emulated") else "")

    return get


def _board_field(key: str, scale: float = 1.0) -> Extract:
    def get(src: Source) -> Optional[Measured]:
        r = src.results or {}
        v = _num(r.get(key))
        if v is None and key == "flash_bytes":  # results from before compressed bundles
            v = _num(r.get("model_bytes"))
        return None if v is None else Measured(v / scale)

    return get


def _board_parity(src: Source) -> Optional[Measured]:
    par = (src.results or {}).get("parity") or {}
    if not par:
        return None
    bad = [k for k, v in par.items() if not (isinstance(v, dict) and v.get("equal"))]
    label = "board accuracy equals the host's on " + ", ".join(par)
    return Measured("fail" if bad else "pass", label if not bad else f"differs on {bad}")


def _run_macs(src: Source) -> Optional[Measured]:
    v = _num(getattr(src.run, "macs", None))
    return None if v is None else Measured(v, "MACs per image (PyTorch graph)")


def _host_n(src: Source) -> Optional[int]:
    """The test images the host evaluated: the export's parity count (same test split)."""
    art = (getattr(src.run, "export", None) or {}).get(src.format) or {}
    n = (art.get("parity") or {}).get("n") if isinstance(art, dict) else None
    return int(n) if isinstance(n, int) and not isinstance(n, bool) else None


def _host_clean(src: Source) -> Optional[Measured]:
    v = _num(getattr(src.run, "clean", None))
    return None if v is None else Measured(v, "clean (PyTorch)", _host_n(src))


def _host_robust(src: Source) -> Optional[Measured]:
    from robustedge.report.collect import headline

    head = headline(src.run) if src.run is not None else None
    if head is None:
        return None
    return Measured(float(head.acc), f"{head.label} (PyTorch)", _host_n(src))


def _host_ledger(key: str, scale: float = 1.0) -> Extract:
    def get(src: Source) -> Optional[Measured]:
        for stage in getattr(src.run, "ledger", None) or []:
            if isinstance(stage, dict) and stage.get("format") == src.format:
                v = _num(stage.get(key))
                return None if v is None else Measured(v / scale, f"{src.format} (export ledger)")
        return None

    return get


def _host_parity(src: Source) -> Optional[Measured]:
    arts = getattr(src.run, "export", None) or {}
    if not arts:
        return None
    failed = [f for f, a in arts.items() if not ((a or {}).get("parity") or {}).get("passed")]
    return Measured("fail" if failed else "pass", f"export parity of {', '.join(arts)}")


def _bundle_art(src: Source) -> Dict[str, Any]:
    m = src.manifest or {}
    return (m.get("formats") or {}).get(src.format or m.get("default_format")) or {}


def _bundle_field(key: str, scale: float = 1.0) -> Extract:
    def get(src: Source) -> Optional[Measured]:
        v = _num(_bundle_art(src).get(key))
        return None if v is None else Measured(v / scale, f"{src.format} (bundle manifest)")

    return get


def _bundle_parity(src: Source) -> Optional[Measured]:
    par = _bundle_art(src).get("parity")
    if not isinstance(par, dict) or "passed" not in par:
        return None
    return Measured("pass" if par["passed"] else "fail", f"export parity of {src.format}")


def _bundle_clean(src: Source) -> Optional[Measured]:
    par = _bundle_art(src).get("parity") or {}
    v = _num(par.get("clean_acc"))
    return None if v is None else Measured(v, f"clean ({src.format} on the host)", par.get("n"))


def _register() -> None:
    acc = {"accuracy": True, "unit": ""}
    METRICS.register(
        "clean",
        Metric(
            "Clean accuracy (fraction).",
            board=_board_acc("clean"),
            host=_host_clean,
            bundle=_bundle_clean,
            **acc,
        ),
    )
    METRICS.register(
        "robust",
        Metric(
            "Headline robust accuracy: on a board the worst case per image over the "
            "transfer set and on-board Square; on the host the worst-case suite or the "
            "strongest attack evaluated (the attack is named).",
            board=_board_robust,
            host=_host_robust,
            **acc,
        ),
    )
    METRICS.register(
        "transfer",
        Metric(
            "Board accuracy on the transfer set (PGD crafted on PyTorch).",
            board=_board_acc("transfer"),
            **acc,
        ),
    )
    METRICS.register(
        "square",
        Metric("Board accuracy under the on-board Square attack.", board=_board_square, **acc),
    )


def _register_board() -> None:
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
        METRICS.register(
            key,
            Metric(
                f"Absolute {key[:-3]} latency in ms (refused on emulated targets).",
                "ms",
                board=_board_latency(key),
                higher_is_better=False,
                absolute_latency=True,
            ),
        )
    METRICS.register(
        "p50_vs_teacher",
        Metric(
            "p50 latency divided by the teacher's on the same target and format in the "
            "same run (meaningful under emulation).",
            "x",
            higher_is_better=False,
            relative=True,
        ),
    )
    METRICS.register(
        "peak_rss_mb",
        Metric(
            "Peak resident memory on the board, MiB.",
            "MiB",
            board=_board_field("peak_rss_mb"),
            higher_is_better=False,
        ),
    )


def _register_sizes() -> None:
    for key, scale, unit in (("bytes", 1.0, "B"), ("kb", KIB, "KiB")):
        METRICS.register(
            f"flash_{key}",
            Metric(
                f"What the board stores ({unit}): the model file as bundled (compressed).",
                unit,
                board=_board_field("flash_bytes", scale),
                host=_host_ledger("flash_bytes", scale),
                bundle=_bundle_field("flash_bytes", scale),
                higher_is_better=False,
                exact=True,
            ),
        )
        METRICS.register(
            f"model_{key}",
            Metric(
                f"What the interpreter loads ({unit}).",
                unit,
                board=_board_field("model_bytes", scale),
                host=_host_ledger("model_bytes", scale),
                bundle=_bundle_field("model_bytes", scale),
                higher_is_better=False,
                exact=True,
            ),
        )
    METRICS.register(
        "macs",
        Metric(
            "Multiply-accumulates per image (non-zero weights for a student).",
            board=_run_macs,
            host=_run_macs,
            higher_is_better=False,
            exact=True,
        ),
    )
    METRICS.register(
        "parity",
        Metric(
            "pass/fail: board accuracy equals the host's for the same file (board), or "
            "every export format passed its parity gate (host, bundle).",
            board=_board_parity,
            host=_host_parity,
            bundle=_bundle_parity,
            pass_fail=True,
        ),
    )


_register()
_register_board()
_register_sizes()
