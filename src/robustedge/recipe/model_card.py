"""A model card next to each benched bundle: the facts a person deploying the model needs.

What it was compressed from and how, its size and MACs, clean and robust accuracy on the host
and on the board with every attack named, the parity gate's result per format, and its limits
(the data it was evaluated on, emulated or not, settings weaker than the default). Everything
is read from the run's JSON files (``metrics.json``, ``eval.json``, ``export/export.json``) and
the board's ``results.json``; nothing is measured here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from robustedge.io import read_json, write_text
from robustedge.report.build import board_robust_cells
from robustedge.report.collect import RunInfo, device_label, headline, load_run

logger = logging.getLogger(__name__)
CARD = "MODEL_CARD.md"


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _num(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return f"{v:,}" if isinstance(v, (int, float)) else "-"


def _ms(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, (int, float)) else "-"


def _rows(pairs: List[List[Any]]) -> List[str]:
    return [f"| {' | '.join(str(c) for c in p)} |" for p in pairs]


def _made(info: RunInfo, metrics: Dict[str, Any]) -> List[str]:
    """How the model was made: teacher, method, sparsity, adversary, distillation."""
    if metrics.get("kind") != "compress":
        return [f"A dense model trained by `robustedge train` (adversary: "
                f"{metrics.get('adversary', '?')}, eps {metrics.get('eps', '?')})."]  # fmt: skip
    teacher = Path(str((metrics.get("teacher") or {}).get("run", "?"))).name
    how = "structured (whole channels removed)" if info.structured else "unstructured"
    target = "fraction of channels removed per layer" if info.structured else "target sparsity"
    removed = (
        "of the teacher's weights removed" if info.structured else "of the prunable weights zeroed"
    )
    budget = metrics.get("budget") or {}
    made_to = (
        f" made to the budget {budget.get('quantity')} <= {_num(budget.get('limit'))} "
        f"{budget.get('unit', '')} (predicted {_num(budget.get('predicted'))}),"
        if budget
        else ""
    )
    return [
        f"Compressed from the teacher `{teacher}` by `{metrics.get('method')}` ({how}, scope "
        f"{metrics.get('scope', '-')}),{made_to} {target} {metrics.get('target_sparsity')}: "
        f"{100 * info.sparsity:.1f} % {removed}; adversarial training "
        f"{metrics.get('adversary')} at eps {metrics.get('eps')} ({metrics.get('steps')} steps); "
        f"distillation weight {metrics.get('kd_alpha')} at temperature {metrics.get('kd_temp')}.",
    ]


def _size(info: RunInfo, metrics: Dict[str, Any]) -> List[str]:
    macs = metrics.get("macs") or {}
    lines = [
        f"Parameters {_num(info.params)} ({_num(info.nonzero or info.params)} non-zero); MACs "
        f"{_num(macs.get('nonzero', info.macs))} on non-zero weights (dense "
        f"{_num(macs.get('dense', info.macs))}: what an interpreter's dense kernels run).",
        "",
        "| format | file bytes | parity gate | clean | transfer (PGD crafted on PyTorch) |",
        "|---|---|---|---|---|",
    ]
    for fmt, a in info.export.items():
        p = a.get("parity", {})
        gate = "off" if p.get("skipped") else ("pass" if p.get("passed") else "FAIL")
        margins = p.get("margins") or {}
        if margins:
            gate += f" (margins: clean {margins.get('clean')}, robust {margins.get('robust')} pts)"
        row = [fmt, _num(a.get("bytes")), gate, _pct(p.get("clean_acc"))]
        lines += _rows([row + [_pct(p.get("transfer_acc"))]])
    return lines


def _host(info: RunInfo, run: Path, metrics: Dict[str, Any]) -> List[str]:
    """Clean accuracy, the headline figure with its suite, and every single attack with its
    settings (``metrics.json`` and ``eval.json``)."""
    import json

    head = headline(info)
    n = metrics.get("n", "?")
    lines = [f"PyTorch float32 on the test split ({n} images): clean {_pct(info.clean)}."]
    if head:
        lines += [f"Headline robust accuracy {_pct(head.acc)}: {head.label}.", ""]
    ev = run / "eval.json"
    rows = list(metrics.get("robust", []))
    rows += json.loads(ev.read_text()).get("robust", []) if ev.is_file() else []
    for r in rows:
        steps = (
            f", {r['steps']} steps x {r.get('restarts') or 1} restart(s)" if r.get("steps") else ""
        )
        lines.append(f"- {r['attack']} eps {r['eps']}{steps}: {_pct(r['acc'])}")
    return lines


def _board(d: Dict[str, Any]) -> List[str]:
    worst, transfer, square = board_robust_cells(d)
    lat = d.get("latency") or {}
    b = d.get("board") or {}
    emulated = (
        "EMULATED (qemu): latency is emulation cost, not a board's"
        if d.get("emulated")
        else "not emulated"
    )
    return [
        f"`{device_label(d)}`, {d.get('format')} on {d.get('backend')} {d.get('backend_version')} "
        f"({d.get('kernels')}, {d.get('threads')} thread(s)); {b.get('machine', '?')}, "
        f"{b.get('os', '?')}: {emulated}.",
        "",
        f"- clean: {_pct((d.get('accuracy') or {}).get('clean'))}",
        f"- robust (worst case per image): {worst}",
        f"- transfer: {transfer}; Square on the board: {square}",
        f"- latency p50 / p99: {_ms(lat.get('p50_ms'))} / {_ms(lat.get('p99_ms'))} ms "
        f"({lat.get('runs', '-')} runs); flash {_num(d.get('flash_bytes'))} B "
        f"({d.get('codec', 'plain')}); model {_num(d.get('model_bytes'))} B; peak RSS "
        f"{d.get('peak_rss_mb', '-')} MiB",
    ]  # fmt: skip


def model_card(run: Path, results: Dict[str, Any], name: Optional[str] = None) -> str:
    """The Markdown card of the model in ``run`` on the board whose ``results`` are given."""
    import json

    info = load_run(Path(run), name)
    metrics = json.loads((Path(run) / "metrics.json").read_text())
    data = metrics.get("data") or _config_data(Path(run))
    lines = [f"# Model card: {info.name}", "", "## How it was made", "", *_made(info, metrics)]
    lines += ["", "## Size", "", *_size(info, metrics), "", "## Accuracy on the host", ""]
    lines += _host(info, Path(run), metrics)
    lines += ["", "## On the board", "", *_board(results), "", "## Limits", ""]
    lines += [
        f"- Evaluated on the `{data}` test split only; accuracy on other data is unknown.",
        "- Robust accuracy is measured against the named attacks and budgets: an upper bound on "
        "the true robust accuracy, not a certificate.",
        "- A figure marked 'weaker than default' ran fewer queries or images than the default.",
        "- Generated by robustedge from the run's JSON files; regenerate rather than edit.",
    ]
    return "\n".join(lines) + "\n"


def _config_data(run: Path) -> str:
    import yaml

    try:
        return str((yaml.safe_load((run / "config.yaml").read_text()) or {}).get("data", "?"))
    except (OSError, yaml.YAMLError):
        return "?"


def write_model_card(run: Path, where: Path, results: Dict[str, Any], name: str) -> Path:
    """Write ``where/MODEL_CARD.md`` (next to the bundle ``where/bundle``)."""
    path = Path(where) / CARD
    write_text(path, model_card(run, results, name))
    return path


def write_model_cards(out: Path, runs: List[Dict[str, Any]]) -> List[Path]:
    """A card next to every benched bundle of a recipe's runs (``runs``: the plan's index,
    paths relative to ``out``); models without a finished run or bench are left out."""
    written = []
    for r in runs:
        run = Path(out) / r["path"]
        if not (run / "metrics.json").is_file():
            continue
        for res in sorted(run.glob("device/*/results.json")):
            results = read_json(res)
            written.append(write_model_card(run, res.parent, results, r["name"]))
    return written
