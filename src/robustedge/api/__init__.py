"""The Python API: one function per stage, typed results, your own models and data.

    from robustedge import api
    t = api.train(out="runs/teacher", model=MyNet(), data=api.from_torch(train_ds, test_ds),
                  epochs=20, eps=8 / 255)
    s = api.compress(out="runs/student", teacher=str(t.run), sparsity=0.8, epochs=5)
    x = api.export(s.run, formats=("tflite-int8",))

The CLI commands call these same functions (``robustedge train`` is :func:`train`, ...).
Reference: docs/api.md.
"""

from __future__ import annotations

from robustedge.api.results import (
    BenchResult,
    BundleResult,
    CompressResult,
    EvalResult,
    ExportResult,
    RecipeResult,
    ReportResult,
    TrainResult,
)
from robustedge.api.stages import (
    bench,
    bundle,
    bundle_model,
    check,
    compress,
    evaluate,
    export,
    load_manifold,
    load_run,
    report,
    run_recipe,
    train,
)
from robustedge.data import Dataset, from_arrays, from_torch, register_dataset
from robustedge.gates.result import CheckResult
from robustedge.models.instance import register_model

__all__ = [
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
    "compress",
    "evaluate",
    "export",
    "from_arrays",
    "from_torch",
    "load_manifold",
    "load_run",
    "register_dataset",
    "register_model",
    "report",
    "run_recipe",
    "train",
]
