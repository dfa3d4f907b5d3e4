"""Evaluate one bundled model on the board: accuracy, robust accuracy, latency, memory.

Eval data are N x C x H x W float32 in [0, 1]; ``to_model_input`` turns them into what the
model takes (NHWC when the manifest says so; int8 via the manifest's scale and zero point) and
``from_model_output`` dequantizes int8 outputs. The Square attack (Andriushchenko et al., 2020)
runs against the interpreter itself through ``predict_fn`` (scores only, no gradients).

The headline robust accuracy (``worst_case``) is the worst case per image over the replayed
transfer set (PGD crafted on PyTorch) and the on-board Square attack: an image counts as robust
only when the board classifies it correctly clean, on its transfer example and after Square.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from robustedge.device.board import measure
from robustedge.device.board.backends import Model, open_model, versions
from robustedge.device.board.bundle_format import (
    MANIFEST,
    SQUARE,
    BundleError,
    inflate_model,
    load_square_core,
    model_name,
    sha256_file,
)
from robustedge.device.board.config import BenchConfig
from robustedge.device.board.probe import ThrottledRun

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
    return load_square_core(bundle / SQUARE)


def run_square(
    bundle: Path,
    predict,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    n_queries: int,
    n: Optional[int],
    p_init: Optional[float],
    seed: int,
    restarts: int = 1,
) -> Tuple[Dict[str, Any], np.ndarray]:
    """Square Linf on the first ``n`` samples (None: all), against the board's model.

    Returns the result row (robust accuracy, budget, its name and, when below the default
    budget or on fewer than all images, the "weaker than default" label) and the per-image
    verdict (True: the board still classifies the attacked image correctly). ``p_init`` None:
    the bundled core's own default (``P_INIT``)."""
    square = load_square(bundle)
    p_init = float(square.P_INIT if p_init is None else p_init)
    n_total = len(x)
    x, y = (x, y) if n is None else (x[:n], y[:n])
    rng = np.random.default_rng(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    x_adv, queries = square.square_linf_numpy(
        lambda b: predict(b)[0], x, y, eps, n_queries, p_init, rng, restarts
    )
    linf = float(np.abs(x_adv - x).max()) if len(x) else 0.0
    if linf > eps + 1e-6 or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"square attack left the eps-ball/range (linf={linf})")
    survived = predict(x_adv)[0].argmax(1) == y
    row = {
        "attack": "square",
        "name": measure.square_name(n_queries, restarts),
        "norm": "linf",
        "eps": eps,
        "n_queries": n_queries,
        "restarts": restarts,
        "p_init": p_init,
        "n": int(len(x)),
        "n_total": int(n_total),
        "seed": seed,
        "acc": round(float(survived.mean()), 6) if len(x) else 0.0,
        "clean_acc_subset": round(float((predict(x)[0].argmax(1) == y).mean()), 6),
        "mean_queries": round(float(queries.mean()), 2),
        "max_linf": round(linf, 6),
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(time.process_time() - c0, 3),  # this process only: load-proof
        "weaker": measure.weaker_than_default(n_queries, restarts, len(x), n_total),
    }
    return row, survived


def run_bundle(
    bundle: Path, manifest: Dict[str, Any], opts: BenchConfig = BenchConfig()
) -> measure.Measurements:
    """Measure one format of a verified bundle on this board."""
    t_start = time.perf_counter()
    fmt, art = pick_format(manifest, opts.format)
    stored = bundle / art["file"]
    with tempfile.TemporaryDirectory(prefix="robustedge-model-") as tmp:
        path, decompress_ms = model_path(stored, art, Path(tmp))
        model = open_model(str(path), opts.threads, opts.reference_kernels, opts.backend)
        model_bytes = path.stat().st_size
        predict = make_predict(model, art["input"], art["output"])
        sets, accuracy, digests, correct = evaluate_sets(
            bundle, manifest, model, art["input"], predict
        )
        robust, survived = square_results(bundle, manifest, predict, sets, opts)
        worst = worst_case(manifest, correct, robust[0] if robust else None, survived)
        outcomes = per_image(manifest, correct, worst)
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
        worst_case={k: v for k, v in worst.items() if k != "verdicts"} if worst else None,
        outcomes=outcomes,
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
Verdicts = Dict[str, np.ndarray]  # eval set -> per-image "classified correctly"


def evaluate_sets(
    bundle: Path,
    manifest: Dict[str, Any],
    model: Model,
    ispec: Dict[str, Any],
    predict: Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]],
) -> Tuple[EvalSets, Dict[str, float], Dict[str, str], Verdicts]:
    """Accuracy, a sha256 of the raw outputs and the per-image verdicts for every bundled
    eval set."""
    sets: EvalSets = {}
    accuracy: Dict[str, float] = {}
    digests: Dict[str, str] = {}
    correct: Verdicts = {}
    for name, rel in manifest["eval_sets"].items():
        x, y = load_npz(bundle / rel)
        check_shape(x, ispec, model, f"eval set '{name}'")
        scores, raw = predict(x)
        correct[name] = scores.argmax(1) == y
        accuracy[name] = float(correct[name].mean())
        digests[name] = hashlib.sha256(np.ascontiguousarray(raw).tobytes()).hexdigest()
        sets[name] = (x, y)
    if "clean" in sets and "transfer" in sets:
        (xc, yc), (xt, yt) = sets["clean"], sets["transfer"]
        if xc.shape != xt.shape or not np.array_equal(yc, yt):
            correct.pop("transfer")  # not the clean images' adversarial twins: no per-image view
            logger.warning("the transfer set does not pair with the clean set image by image")
    return sets, accuracy, digests, correct


def square_results(
    bundle: Path, manifest: Dict[str, Any], predict, sets: EvalSets, opts: BenchConfig
) -> Tuple[List[Dict[str, Any]], Optional[np.ndarray]]:
    """Square Linf on the clean set with the manifest's eps unless overridden, and its
    per-image verdicts; ``([], None)`` if skipped."""
    if opts.square_queries <= 0 or "clean" not in sets:
        return [], None
    sq = manifest.get("square") or {}
    eps = opts.square_eps if opts.square_eps is not None else square_eps(manifest)
    x, y = sets["clean"]
    p_init = _number(sq["p_init"], "square.p_init") if sq.get("p_init") is not None else None
    args = (eps, opts.square_queries, opts.square_n, p_init, opts.seed, opts.square_restarts)
    row, survived = run_square(bundle, predict, x, y, *args)
    return [row], survived


def square_eps(manifest: Dict[str, Any]) -> float:
    """The Linf budget the bundle records for the on-board Square: ``square.eps``, else the
    transfer attack's eps (bundles that recorded only that); BundleError when it records
    neither (pass ``--square-eps``)."""
    sq = manifest.get("square") or {}
    transfer = manifest.get("transfer_attack") or {}
    for key, rec in (("square.eps", sq), ("transfer_attack.eps", transfer)):
        if isinstance(rec, dict) and rec.get("eps") is not None:
            return _number(rec["eps"], key)
    raise BundleError(
        "bundle manifest records no Square eps (square.eps or transfer_attack.eps): "
        "rebuild the bundle or pass --square-eps"
    )


def _number(value: Any, key: str) -> float:
    """``value`` as a float; BundleError naming the manifest key when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BundleError(f"bundle manifest: {key} is not a number: {value!r}")
    return float(value)


def worst_case(
    manifest: Dict[str, Any],
    correct: Verdicts,
    square: Optional[Dict[str, Any]],
    survived: Optional[np.ndarray],
) -> Optional[Dict[str, Any]]:
    """Worst case per image over the transfer set and the on-board Square attack.

    An image is robust only if the board classifies it correctly clean, on its transfer
    example, and after Square (on the images Square attacked: the first ``square["n"]``).
    Returns the accuracy with its label (attacks, budgets, images; "weaker than default" when
    the Square budget or image count is below the default) and the per-attack accuracies on the
    same images; None without a clean set."""
    if "clean" not in correct:
        return None
    n_total = len(correct["clean"])
    n = n_total if square is None else int(square["n"])
    robust = correct["clean"][:n].copy()
    per_attack: Dict[str, float] = {}
    only: Dict[str, int] = {}
    verdicts: Dict[str, np.ndarray] = {}
    t_rec = manifest.get("transfer_attack") or {}
    t_name = measure.transfer_name(t_rec)
    if "transfer" in correct:
        verdicts[t_name] = correct["transfer"][:n]
    if square is not None and survived is not None:
        verdicts[f"{square['name']} on-board"] = survived
    for v in verdicts.values():
        robust &= v
    for name, v in verdicts.items():
        per_attack[name] = round(float(v.mean()), 6) if n else 0.0
        others = [w for k, w in verdicts.items() if k != name]
        alone = correct["clean"][:n] & ~v
        for w in others:
            alone &= w
        only[name] = int(alone.sum())  # broken by this attack alone
    names = list(verdicts)
    eps = sorted({float(e) for e in (t_rec.get("eps"), (square or {}).get("eps")) if e is not None})
    label = (
        ("worst of " + " and ".join(names) if len(names) > 1 else (names or ["clean only"])[0])
        + (f", eps {'/'.join(f'{e:g}' for e in eps)}" if eps else "")
        + f", {n} images"
    )
    if square is None:
        weaker = measure.weaker_than_default(0, 1, n, n_total)
    else:
        weaker = square.get("weaker")
    return {
        "acc": round(float(robust.mean()), 6) if n else 0.0,
        "verdicts": robust,  # per image (run_bundle keeps them packed in ``outcomes``)
        "n": int(n),
        "n_total": int(n_total),
        "attacks": names,
        "label": label,
        "transfer_name": t_name,
        "weaker": weaker,
        "clean_acc_subset": round(float(correct["clean"][:n].mean()), 6) if n else 0.0,
        "per_attack": per_attack,
        "broken_only_by": only,
    }


def per_image(
    manifest: Dict[str, Any], correct: Verdicts, worst: Optional[Dict[str, Any]]
) -> Dict[str, Any]:
    """The per-image outcomes a results file keeps (``Measurements.outcomes``): each eval
    set's verdicts and the worst case per image, packed, with the clean set file's sha256."""
    out: Dict[str, Any] = {name: measure.pack_outcomes(v) for name, v in correct.items()}
    if worst is not None:
        out["robust"] = measure.pack_outcomes(worst["verdicts"])
    clean = (manifest.get("files") or {}).get((manifest.get("eval_sets") or {}).get("clean"))
    if isinstance(clean, dict) and clean.get("sha256"):
        out["images"] = clean["sha256"]
    return out


def measure_latency(
    model: Model, ispec: Dict[str, Any], sets: EvalSets, opts: BenchConfig
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
