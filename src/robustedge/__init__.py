"""robustedge: robust, compressed CNNs from PyTorch to ARM boards.

The Python API is :mod:`robustedge.api` (``from robustedge import api``; ``api.train``,
``api.evaluate``, ``api.compress``, ``api.export``, ``api.bundle``, ``api.bench``,
``api.run_recipe``, ``api.report``, ``api.load_run``, the result types, the data helpers).
Its names are importable from here too, except ``compress``, ``export`` and ``report``: those
are the names of subpackages (``robustedge.compress`` ...), which Python's import system binds
on this module, so a function of that name here would be replaced by the package. Everything
loads on first use, so ``import robustedge`` stays light.
"""

from __future__ import annotations

from typing import Any, List

__version__ = "0.1.0"

API_NAMES = (
    "BenchResult",
    "BundleResult",
    "CheckResult",
    "CompressResult",
    "Dataset",
    "EvalResult",
    "ExportResult",
    "RecipeResult",
    "ReportResult",
    "TrainResult",
    "bench",
    "bundle",
    "bundle_model",
    "check",
    "evaluate",
    "from_arrays",
    "from_torch",
    "load_manifold",
    "load_run",
    "register_dataset",
    "register_model",
    "run_recipe",
    "train",
)
__all__ = ["__version__", "api", *API_NAMES]


def __getattr__(name: str) -> Any:
    """``robustedge.train`` and the other API names, imported from robustedge.api on first use."""
    if name in API_NAMES or name == "api":
        import importlib

        api = importlib.import_module("robustedge.api")
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'robustedge' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted([*globals(), "api", *API_NAMES])
