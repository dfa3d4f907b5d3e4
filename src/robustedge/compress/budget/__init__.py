"""Compression to a budget: find the structure that fits what the board allows, train it,
measure it again.

- :mod:`.spec`: the budget (:class:`Budget`, :class:`Quantity`, :meth:`Budget.parse`).
- :mod:`.measures`: measures of a candidate (MACs computed here) and :class:`BudgetMeasures`,
  what the caller passes in for the rest (the bundle's codec, exports' flash bytes, latency on
  a board): compress imports neither export nor device.
- :mod:`.search`: bisection over channel fractions (:func:`search_structure`).
- :mod:`.shape`: per-layer widths, greedily by robust sensitivity per unit saved
  (:func:`search_widths`): what a budget searches unless its shape is ``uniform``.
- :mod:`.flash`: the calibrated flash estimate and the search of both ways, channels removed
  or weights zeroed (:func:`search_flash`).
- :mod:`.strategies`: one strategy per quantity (MACs, flash, latency) with one interface:
  measure a candidate, search, re-measure the trained student, widen and retry.
- :mod:`.train`: :func:`compress_to_budget` (search -> train -> re-measure -> retry once).
- :mod:`.mcu`: microcontroller budgets (TFLM's arena, TFLM's flash), registered in STRATEGIES.
- :mod:`.joint`: several limits at once (:class:`JointBudget`, ``arena_kb=28,tflm_flash_kb=23``),
  searched as one on the binding constraint's share of its limit.
"""

from robustedge.compress.budget.flash import FLASH_MARGIN, SPARSITY_GRID, search_flash
from robustedge.compress.budget.joint import JointStrategy
from robustedge.compress.budget.mcu import ArenaStrategy, TflmFlashStrategy
from robustedge.compress.budget.measures import BudgetMeasures, Measure
from robustedge.compress.budget.search import (
    CHANNELS,
    GRID,
    WEIGHTS,
    Candidate,
    SearchResult,
    search_structure,
)
from robustedge.compress.budget.shape import Sensitivity, search_widths, shrunk_to
from robustedge.compress.budget.spec import (
    UNITS,
    AnyBudget,
    Budget,
    JointBudget,
    Quantity,
    Shape,
    parse_budget,
)
from robustedge.compress.budget.strategies import (
    LATENCY_MARGIN,
    STRATEGIES,
    BudgetStrategy,
    FlashStrategy,
    LatencyStrategy,
    MacsStrategy,
    Teacher,
    make_strategy,
)
from robustedge.compress.budget.train import compress_to_budget, student_config

__all__ = [
    "Budget",
    "JointBudget",
    "AnyBudget",
    "parse_budget",
    "JointStrategy",
    "Quantity",
    "Shape",
    "Sensitivity",
    "search_widths",
    "shrunk_to",
    "UNITS",
    "BudgetMeasures",
    "Measure",
    "Candidate",
    "SearchResult",
    "CHANNELS",
    "WEIGHTS",
    "GRID",
    "SPARSITY_GRID",
    "FLASH_MARGIN",
    "LATENCY_MARGIN",
    "search_structure",
    "search_flash",
    "BudgetStrategy",
    "MacsStrategy",
    "FlashStrategy",
    "LatencyStrategy",
    "ArenaStrategy",
    "TflmFlashStrategy",
    "STRATEGIES",
    "Teacher",
    "make_strategy",
    "compress_to_budget",
    "student_config",
]
