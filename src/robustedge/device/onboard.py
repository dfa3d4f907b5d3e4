"""Evaluate one bundled model on the board: accuracy, Square robust accuracy, latency, memory.

Eval data are N x C x H x W float32 in [0, 1]; ``to_model_input`` turns them into what the
model takes (NHWC when the manifest says so; int8 via the manifest's scale and zero point) and
``from_model_output`` dequantizes int8 outputs. The Square attack (Andriushchenko et al., 2020)
runs against the interpreter itself through ``predict_fn`` (scores only, no gradients).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from robustedge.device import measure
from robustedge.device.backends import Model, open_model, versions
from robustedge.device.bundle_format import (
    BENCH_RUNS,
    BENCH_SQUARE_N,
    BENCH_SQUARE_QUERIES,
    MANIFEST,
    SQUARE,
    BundleError,
    inflate_model,
    model_name,
    sha256_file,
)
from robustedge.device.probe import ThrottledRun

logger = logging.getLogger(__name__)

INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def to_model_input(x: np.ndarray, spec: Dict[str, Any]) -> np.ndarray:
    """NCHW float [0,1] -> the model's layout and dtype (quantized: round, clip)."""
    if spec.get("layout", "NCHW") == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    dtype = spec.get("dtype", "float32")
    if dtype in INT_RANGES:
        lo, hi = INT_RANGES[dtype]
        q = np.round(x / float(spec["scale"]) + int(spec["zero_point"]))
        return np.clip(q, lo, hi).astype(dtype)
    return np.ascontiguousarray(x, dtype=np.float32)


def from_model_output(out: np.ndarray, spec: Dict[str, Any]) -> np.ndarray:
    """Raw outputs -> float scores (dequantized when the output is int8/uint8)."""
    if spec.get("dtype", "float32") in INT_RANGES and spec.get("scale"):
        return (out.astype(np.float32) - int(spec["zero_point"])) * float(spec["scale"])
    return out.astype(np.float32)


def check_shape(x: np.ndarray, spec: Dict[str, Any], model: Model, where: str) -> None:
    """Refuse data whose per-sample shape is not the model's (a bundle for another shape)."""
    sample = to_model_input(x[:1], spec).shape[1:]
    want = tuple(model.input_shape[1:])
    if tuple(sample) != want:
        raise BundleError(
            f"bundle built for another input shape: {where} gives {tuple(sample)}, "
            f"the model takes {want}"
        )


def make_predict(
    model: Model,
    ispec: Dict[str, Any],
    ospec: Dict[str, Any],
) -> Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """``predict(x_nchw) -> (scores, raw)``, one invoke per sample (batch-1 models)."""

    def predict(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        xm = to_model_input(x, ispec)
        raw = [np.array(model.run(xm[i : i + 1])) for i in range(len(xm))]
        raw_all = np.concatenate(raw, axis=0).reshape(len(xm), -1)
        return from_model_output(raw_all, ospec), raw_all

    return predict


def load_npz(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        if "x" not in z or "y" not in z:
            raise BundleError(f"{path.name} has no 'x'/'y' arrays")
        return z["x"].astype(np.float32), z["y"].astype(np.int64)


def load_square(bundle: Path) -> Any:
    """Import the bundled ``square_core.py`` by file path (it is not a package on the board)."""
    spec = importlib.util.spec_from_file_location("robustedge_square_core", bundle / SQUARE)
    if spec is None or spec.loader is None:
        raise BundleError(f"cannot load {SQUARE} from the bundle")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_square(
    bundle: Path, predict, x, y, eps: float, n_queries: int, n: int, p_init: float, seed: int
) -> Dict[str, Any]:
    """Square Linf on the first ``n`` samples, against the board's model; robust accuracy."""
    square = load_square(bundle)
    x, y = x[:n], y[:n]
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    x_adv, queries = square.square_linf_numpy(
        lambda b: predict(b)[0], x, y, eps, n_queries, p_init, rng
    )
    linf = float(np.abs(x_adv - x).max()) if len(x) else 0.0
    if linf > eps + 1e-6 or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"square attack left the eps-ball/range (linf={linf})")
    acc_adv = float((predict(x_adv)[0].argmax(1) == y).mean())
    return {
        "attack": "square",
        "norm": "linf",
        "eps": eps,
        "n_queries": n_queries,
        "p_init": p_init,
        "n": int(len(x)),
        "seed": seed,
        "acc": round(acc_adv, 6),
        "clean_acc_subset": round(float((predict(x)[0].argmax(1) == y).mean()), 6),
        "mean_queries": round(float(queries.mean()), 2),
        "max_linf": round(linf, 6),
        "seconds": round(time.perf_counter() - t0, 3),
    }


@dataclass(frozen=True)
class RunOptions:
    """How to measure a bundle on the board (the runner's command-line options)."""

    fmt: Optional[str] = None
    threads: int = 1
    runs: int = BENCH_RUNS
    warmup: int = 20
    square_queries: int = BENCH_SQUARE_QUERIES
    square_n: int = BENCH_SQUARE_N
    square_eps: Optional[float] = None
    reference_kernels: bool = False
    backend: Optional[str] = None
    emulated: bool = False
    seed: int = 0
    refuse_throttled: bool = False

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        for name in ("runs", "warmup", "square_queries", "square_n"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def run_bundle(
    bundle: Path, manifest: Dict[str, Any], opts: RunOptions = RunOptions()
) -> measure.Measurements:
    """Measure one format of a verified bundle on this board."""
    t_start = time.perf_counter()
    fmt, art = pick_format(manifest, opts.fmt)
    stored = bundle / art["file"]
    with tempfile.TemporaryDirectory(prefix="robustedge-model-") as tmp:
        path, decompress_ms = model_path(stored, art, Path(tmp))
        model = open_model(str(path), opts.threads, opts.reference_kernels, opts.backend)
        model_bytes = path.stat().st_size
        predict = make_predict(model, art["input"], art["output"])
        sets, accuracy, digests = evaluate_sets(bundle, manifest, model, art["input"], predict)
        robust = square_results(bundle, manifest, predict, sets, opts)
        latency = measure_latency(model, art["input"], sets, opts)
    return measure.Measurements(
        format=fmt,
        model_file=art["file"],
        model_bytes=model_bytes,
        flash_bytes=stored.stat().st_size,
        codec=art.get("codec"),
        decompress_ms=decompress_ms,
        backend=model.backend,
        backend_version=model.version,
        kernels=model.kernels,
        threads=opts.threads,
        reference_kernels=opts.reference_kernels,
        emulated=opts.emulated,
        accuracy=accuracy,
        n_eval={name: int(len(y)) for name, (_, y) in sets.items()},
        robust=robust,
        latency=latency,
        peak_rss_mb=measure.peak_rss_mb(),
        board=measure.board_info(versions()),
        parity=parity(accuracy, art.get("parity") or {}),
        output_sha256=digests,
        bundle={
            "run": manifest.get("run"),
            "created": manifest.get("created"),
            "manifest_sha256": sha256_file(bundle / MANIFEST),
        },
        wall_s=round(time.perf_counter() - t_start, 3),
    )


def model_path(stored: Path, art: Dict[str, Any], tmp: Path) -> Tuple[Path, Optional[float]]:
    """The file the interpreter loads: ``stored`` itself, or (compressed) its bytes inflated
    into ``tmp`` under the model's own name, checked against the manifest's sha256 again;
    with the milliseconds that took."""
    if art.get("codec") is None:
        return stored, None
    path = tmp / model_name(art)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        inflate_model(stored, art, f)
    return path, round((time.perf_counter() - t0) * 1e3, 3)


def pick_format(manifest: Dict[str, Any], fmt: Optional[str]) -> Tuple[str, Dict[str, Any]]:
    """The requested format (default: the manifest's) and its artifact entry."""
    formats = manifest["formats"]
    fmt = fmt or manifest.get("default_format") or sorted(formats)[0]
    if fmt not in formats:
        raise BundleError(f"format '{fmt}' is not in this bundle (has: {', '.join(formats)})")
    return fmt, formats[fmt]


EvalSets = Dict[str, Tuple[np.ndarray, np.ndarray]]


def evaluate_sets(
    bundle: Path,
    manifest: Dict[str, Any],
    model: Model,
    ispec: Dict[str, Any],
    predict: Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]],
) -> Tuple[EvalSets, Dict[str, float], Dict[str, str]]:
    """Accuracy and a sha256 of the raw outputs for every bundled eval set."""
    sets: EvalSets = {}
    accuracy: Dict[str, float] = {}
    digests: Dict[str, str] = {}
    for name, rel in manifest["eval_sets"].items():
        x, y = load_npz(bundle / rel)
        check_shape(x, ispec, model, f"eval set '{name}'")
        scores, raw = predict(x)
        accuracy[name] = float((scores.argmax(1) == y).mean())
        digests[name] = hashlib.sha256(np.ascontiguousarray(raw).tobytes()).hexdigest()
        sets[name] = (x, y)
    return sets, accuracy, digests


def square_results(
    bundle: Path, manifest: Dict[str, Any], predict, sets: EvalSets, opts: RunOptions
) -> List[Dict[str, Any]]:
    """Square Linf on the clean set with the manifest's eps unless overridden; [] if skipped."""
    if opts.square_queries <= 0 or "clean" not in sets:
        return []
    sq = manifest.get("square") or {}
    eps = float(opts.square_eps if opts.square_eps is not None else sq.get("eps", 0.1))
    x, y = sets["clean"]
    p_init = float(sq.get("p_init", 0.8))
    args = (eps, opts.square_queries, opts.square_n, p_init, opts.seed)
    return [run_square(bundle, predict, x, y, *args)]


def measure_latency(
    model: Model, ispec: Dict[str, Any], sets: EvalSets, opts: RunOptions
) -> Optional[measure.Latency]:
    """Time one sample (after warm-up); refuse the run if asked and the board throttled."""
    if opts.runs <= 0:
        return None
    x0 = to_model_input(next(iter(sets.values()))[0][:1], ispec)
    lat = measure.timed_latency(
        model.timed, x0, opts.runs, opts.warmup, opts.threads, opts.emulated
    )
    refuse_if_throttled(lat, opts.refuse_throttled)
    return lat


def refuse_if_throttled(lat: measure.Latency, refuse: bool) -> None:
    """Raise ThrottledRun when asked to and the board throttled while it was timed."""
    if lat.throttled and refuse:
        raise ThrottledRun(
            "refusing the latency run: " + "; ".join(lat.problems) + " (let the board cool, "
            "set the governor to performance, and run again)"
        )


def parity(accuracy: Dict[str, float], host: Dict[str, Any]) -> Dict[str, Any]:
    """Board accuracy next to the host's reference figures for the same artifact."""
    out: Dict[str, Any] = {}
    for name, acc in accuracy.items():
        ref = host.get(f"{name}_acc")
        if ref is not None:
            out[name] = {"host": ref, "board": acc, "equal": abs(acc - float(ref)) < 1e-9}
    return out
