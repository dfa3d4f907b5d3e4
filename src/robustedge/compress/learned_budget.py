"""Per-layer sparsity budgets learned by HARP's rate phase (prox's ``layer_budget harp``).

Before prox trains, HARP's pruning phase (:func:`robustedge.compress.method_harp.train_rates`,
HARP's default settings) runs on the student as it starts: weights frozen, importance scores
and one kept fraction ``k_l`` per layer trained on the run's robust objective plus HARP's
compression-rate term. Its learned spread becomes prox's budgets: exactly the target's number
of kept weights, shared over the layers in proportion to ``k_l n_l`` (largest remainder, as
HARP's own student). The student's weights, BatchNorm parameters and statistics are then put
back: only the budgets carry over; prox keeps each layer at its share of the ramp and ranks
weights inside a layer by magnitude as before (:func:`robustedge.compress.saliency.budget_masks`).

Why (docs/compression-diagnosis.md, section 10): forced onto ResNet-8 at 99 %, the mean of
HARP's learned sparsities put prox ahead of HARP itself on both seeds, where prox's own global
ranking ties it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Tuple

from robustedge.compress.common import PruneContext
from robustedge.compress.method_harp import HarpOptions, build_state, kept_counts, train_rates

logger = logging.getLogger(__name__)
PHASE = "harp-budget"  # the checkpoint / history phase of the rate training


def budgets_from_rates(
    rates: Dict[str, float], sizes: Dict[str, int], sparsity: float
) -> Dict[str, float]:
    """Per-layer sparsities that keep exactly ``sparsity``'s number of weights in all,
    shared in proportion to ``rates[n] * sizes[n]`` (each layer at most its size)."""
    names = list(sizes)
    kept = kept_counts([rates[n] for n in names], [sizes[n] for n in names], sparsity)
    return {n: 1.0 - k / sizes[n] for n, k in zip(names, kept)}


def learned_budgets(ctx: PruneContext, epochs: int) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """(per-layer sparsities, what was learned): HARP's rate phase for ``epochs`` on
    ``ctx.model`` (restored afterwards)."""
    names = list(ctx.params)
    sizes = {n: p.numel() for n, p in ctx.params.items()}
    before = copy.deepcopy(ctx.model.state_dict())
    opts = HarpOptions()  # HARP's own defaults
    state, plan = build_state(ctx, opts)
    record = train_rates(ctx, state, plan, opts, epochs, PHASE)
    ctx.model.load_state_dict(before)
    rates = {n: float(k) for n, k in zip(names, state.rates().detach())}
    report = {
        "saliency": "harp",
        "epochs": epochs,
        "learned_rates": {n: round(k, 6) for n, k in rates.items()},
        "gamma_frozen": record["gamma_frozen"],
        "kept_per_epoch": [round(e["kept"], 6) for e in record["epochs"]],
        "rates_per_epoch": [e["rates"] for e in record["epochs"]],
    }
    budgets = budgets_from_rates(rates, sizes, ctx.cfg.sparsity)
    logger.info("prox layer budgets (harp rate phase, %d epochs): %s", epochs, budgets)
    return budgets, report
