"""Generated blocks of docs/compression-diagnosis.md (scripts/docs_blocks.py registers them):
the diagnosis variants over seeds, the per-seed rows of the first gap, the mask traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from results_render import md_table, pct, tradeoff

ATTACKS = [("clean", "clean"), ("pgd", "PGD-20x5"), ("apgd_ce", "APGD-CE"),
           ("apgd_dlr", "APGD-DLR"), ("square", "Square-1000"), ("worst", "worst")]  # fmt: skip


def _diagnosis(measured: Path) -> Dict[str, Any]:
    return json.loads((measured / "compression_diagnosis.json").read_text())


def diagnosis_summary(measured: Path) -> List[str]:
    """compression_diagnosis.json's variants: mean ± std over their seeds, per suite and
    sparsity, with seed 0's per-layer sparsity (conv2 / fc1 / fc2 on LeNet-5)."""
    d = _diagnosis(measured)
    layers = {(r["variant"], r["sparsity"]): r.get("layers") or {} for r in d.get("rows", [])
              if r.get("seed") == 0}  # fmt: skip
    summary = d.get("summary", [])
    cols = [(k, h) for k, h in ATTACKS if any(r.get(k) is not None for r in summary)]
    rows = []
    for r in sorted(summary, key=lambda r: (r["sparsity"], r.get("suite", ""), r["variant"])):
        lay = layers.get((r["variant"], r["sparsity"]), {})
        rows.append(
            [r["sparsity"], r["variant"], r.get("suite"), len(r.get("seeds", []))]
            + [pct(r.get(k), r.get(f"{k}_std") if len(r.get("seeds", [])) > 1 else None)
               for k, _ in cols]
            + [" / ".join(f"{100 * v:.1f}" for v in lay.values()) or "-"]
        )  # fmt: skip
    head = ["sparsity", "variant", "suite", "seeds", *(f"{h} %" for _, h in cols)]
    return md_table([*head, "per-layer sparsity % (seed 0)"], rows)


def diagnosis_seed_rows(measured: Path) -> List[str]:
    """The first gap's extra seeds (tradeoff.py runs), PGD-20x5 and clean per seed."""
    d = _diagnosis(measured)
    cells: Dict[Tuple[str, float], Dict[str, Any]] = {}
    seeds = sorted(d.get("tradeoff_py_seed_rows", {}))
    for seed in seeds:
        for r in d["tradeoff_py_seed_rows"][seed]:
            cells.setdefault((r["method"], r["sparsity"]), {})[seed] = r
    rows = [
        [sp, m, *(f"{pct(c[s]['pgd'])} / {pct(c[s]['clean'])}" if s in c else "-" for s in seeds)]
        for (m, sp), c in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    return md_table(["sparsity", "method", *(f"{s}: PGD-20x5 / clean %" for s in seeds)], rows)


def compression_traces(measured: Path) -> List[str]:
    """benchmarks/compression_trace.py: how each method's mask and accuracy move, per file."""
    rows = []
    for path in sorted(measured.glob("compression_trace_*.json")):
        d = json.loads(path.read_text())
        trace, st = d.get("trace", []), d.get("settings", {})
        if not trace:
            continue
        prune = [e for e in trace if e.get("phase") != "finetune"]
        churn = [e["mask_churn"] for e in prune[1:] if e.get("mask_churn") is not None]
        evals = [e for e in prune if e.get("pgd10") is not None]
        overlap = d.get("overlap_with_final") or [None]
        rows.append(
            [f"`{(st.get('name') or st.get('variant') or '?').split('=')[0]}`", st.get("sparsity"),
             " / ".join(f"{100 * v:.1f}" for v in trace[-1].get("zeros", {}).values()),
             d.get("frozen_after"), pct(overlap[0]) if overlap[0] is not None else "-",
             f"{min(churn)}-{max(churn)}" if churn else "-",
             " / ".join(f"{e['epoch']}: {pct(e['pgd10'])}" for e in evals),
             pct(trace[-1].get("pgd10"))]
        )  # fmt: skip
    head = ["variant", "sparsity", "final sparsity per pruned layer %", "mask frozen after"]
    head += ["epoch-1 mask overlap with final %", "mask changes per epoch"]
    return md_table([*head, "PGD-10 % at epoch", "PGD-10 % after fine-tune"], rows)


def push90_more(measured: Path) -> List[str]:
    """compression_push90.json's nested runs: the 5-seed check and the seed-0 screens."""
    d = json.loads((measured / "compression_push90.json").read_text())
    lines: List[str] = []
    if isinstance(d.get("seeds5"), dict):
        lines += ["Over seeds 0-4 (`seeds5`):", ""] + tradeoff("seeds5", d["seeds5"])
    for i, screen in enumerate(d.get("screens_seed0") or [], 1):
        lines += [f"Seed-0 screen {i} (`screens_seed0`):", ""] + tradeoff("screen", screen)
    return lines


def synthetic_budgets(measured: Path) -> List[str]:
    """compression_synthetic_levers.json: where each variant puts its weights (per-layer
    sparsity of conv2 / fc1 / fc2) at each sparsity, seed 0."""
    d = json.loads((measured / "compression_synthetic_levers.json").read_text())
    found = sorted(d.get("rows", []), key=lambda r: (r.get("sparsity", 0), r.get("method", "")))
    rows = [
        [r.get("sparsity"), f"`{r.get('method')}`",
         " / ".join(f"{100 * v:.1f}" for v in r["layers"].values()), pct(r.get("worst"))]
        for r in found
        if r.get("layers")
    ]  # fmt: skip
    return md_table(
        ["sparsity", "variant", "per-layer sparsity % (conv2 / fc1 / fc2)", "worst %"], rows
    )
