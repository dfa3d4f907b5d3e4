"""Interpreter backends for the board: ai-edge-litert, tflite-runtime, onnxruntime.

A backend opens one model file and gives a ``Model`` with NumPy in/out. Which backend runs is
picked by the artifact's format (``.tflite`` or ``.onnx``) and by what the board has installed.
Imports of the interpreter packages happen inside ``open`` so that this module itself needs only
the stdlib and numpy.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from robustedge.errors import RobustEdgeError
from robustedge.registry import Registry

logger = logging.getLogger(__name__)


@dataclass
class Model:
    """An opened model: ``run(x)`` maps one model-layout, model-dtype batch to raw outputs;
    ``timed(x, runs)`` invokes ``runs`` times and returns seconds per invoke (the loop is
    inlined per backend so timing adds one clock read per invoke and nothing else)."""

    backend: str
    version: str
    kernels: str
    threads: int
    input_shape: Tuple[int, ...]
    input_dtype: str
    run: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    timed: Callable[[np.ndarray, int], np.ndarray] = field(repr=False)


@dataclass(frozen=True)
class Backend:
    """A named interpreter: the file kind it reads, the module it needs, how to open a model."""

    name: str
    kind: str  # "tflite" | "onnx"
    module: str
    pip_name: str
    opener: Callable[[str, int, bool], Model]

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module.split(".")[0]) is not None
        except (ImportError, ValueError):
            return False


BACKENDS: Registry[Backend] = Registry("backend")
clock = time.perf_counter_ns
PREFERENCE = ("litert", "tflite-runtime", "onnxruntime")


def kind_of(path: str) -> str:
    """'tflite' or 'onnx' from a model file name."""
    for kind in ("tflite", "onnx"):
        if path.endswith("." + kind):
            return kind
    raise RobustEdgeError(f"unknown model file type: {path} (known: .tflite, .onnx)")


def pick_backend(path: str, prefer: Optional[str] = None) -> Backend:
    """The backend for ``path``: ``prefer`` if given, else the first installed one that reads it."""
    kind = kind_of(path)
    if prefer:
        b = BACKENDS.get(prefer)
        if b.kind != kind:
            raise RobustEdgeError(f"backend '{prefer}' reads .{b.kind} files, not {path}")
        if not b.available():
            raise RobustEdgeError(f"backend '{prefer}' is not installed: pip install {b.pip_name}")
        return b
    candidates = [BACKENDS.get(n) for n in PREFERENCE if BACKENDS.get(n).kind == kind]
    for b in candidates:
        if b.available():
            return b
    options = " or ".join(f"'pip install {b.pip_name}'" for b in candidates)
    raise RobustEdgeError(f"no interpreter for .{kind} models on this board: {options}")


def open_model(
    path: str, threads: int = 1, reference_kernels: bool = False, prefer: Optional[str] = None
) -> Model:
    """Open ``path`` with the best available backend (see ``pick_backend``)."""
    b = pick_backend(path, prefer)
    logger.info("opening %s with %s (threads=%d, ref=%s)", path, b.name, threads, reference_kernels)
    try:
        return b.opener(path, threads, reference_kernels)
    except Exception as e:  # interpreters raise ValueError, RuntimeError or their own types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        others = " or ".join(o.pip_name for o in _others(b))
        hint = f" (another interpreter may: pip install {others})" if others else ""
        name = os.path.basename(path)
        raise RobustEdgeError(f"{b.name} cannot load {name}: {first}{hint}") from None


def _others(b: Backend) -> List[Backend]:
    return [o for o in (BACKENDS.get(n) for n in PREFERENCE) if o.kind == b.kind and o != b]


def _tflite_opener(module: str, version_of: Callable[[object], str]) -> Callable:
    def opener(path: str, threads: int, reference_kernels: bool) -> Model:
        mod = importlib.import_module(module)
        kw = {}
        if reference_kernels:
            kw["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_REF
        interp = mod.Interpreter(model_path=path, num_threads=threads, **kw)
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        i_idx, o_idx = inp["index"], out["index"]
        set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor

        def run(x: np.ndarray) -> np.ndarray:
            set_tensor(i_idx, x)
            invoke()
            return get_tensor(o_idx)

        def timed(x: np.ndarray, runs: int) -> np.ndarray:
            stamps = [0] * (runs + 1)
            stamps[0] = clock()
            for i in range(1, runs + 1):
                set_tensor(i_idx, x)
                invoke()
                get_tensor(o_idx)
                stamps[i] = clock()
            return _per_call(stamps)

        kernels = "BUILTIN_REF" if reference_kernels else "XNNPACK/builtin"
        return Model(
            "",
            version_of(mod),
            kernels,
            threads,
            tuple(int(d) for d in inp["shape"]),
            np.dtype(inp["dtype"]).name,
            run,
            timed,
        )

    return opener


def _dist_version(dist: str) -> Callable[[object], str]:
    def get(_mod: object) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(dist)
        except PackageNotFoundError:
            return "unknown"

    return get


def _onnx_open(path: str, threads: int, reference_kernels: bool) -> Model:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if reference_kernels:  # closest thing onnxruntime has: no graph rewrites
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    name, out_name = inp.name, sess.get_outputs()[0].name
    srun = sess.run
    shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
    dtype = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}.get(
        inp.type, "float32"
    )

    def run(x: np.ndarray) -> np.ndarray:
        return srun([out_name], {name: x})[0]

    def timed(x: np.ndarray, runs: int) -> np.ndarray:
        feed, outs = {name: x}, [out_name]
        stamps = [0] * (runs + 1)
        stamps[0] = clock()
        for i in range(1, runs + 1):
            srun(outs, feed)
            stamps[i] = clock()
        return _per_call(stamps)

    kernels = "CPUExecutionProvider" + ("/no-graph-opt" if reference_kernels else "")
    return Model("", ort.__version__, kernels, threads, shape, dtype, run, timed)


def _per_call(stamps: List[int]) -> np.ndarray:
    """Consecutive nanosecond time stamps -> seconds per call."""
    return np.diff(np.asarray(stamps, dtype=np.int64)) * 1e-9


def _register(name: str, kind: str, module: str, pip_name: str, opener: Callable) -> None:
    def wrapped(path: str, threads: int, ref: bool) -> Model:
        m = opener(path, threads, ref)
        m.backend = name
        return m

    BACKENDS.register(name)(Backend(name, kind, module, pip_name, wrapped))


_register(
    "litert",
    "tflite",
    "ai_edge_litert.interpreter",
    "ai-edge-litert",
    _tflite_opener("ai_edge_litert.interpreter", _dist_version("ai-edge-litert")),
)
_register(
    "tflite-runtime",
    "tflite",
    "tflite_runtime.interpreter",
    "tflite-runtime",
    _tflite_opener("tflite_runtime.interpreter", _dist_version("tflite-runtime")),
)
_register("onnxruntime", "onnx", "onnxruntime", "onnxruntime", _onnx_open)


def _tflm_open(path: str, threads: int, reference_kernels: bool) -> Model:
    """TFLM (microcontrollers), single-threaded with its own kernels only: ``threads`` and
    ``reference_kernels`` change nothing."""
    from robustedge.device.board import tflm  # only when asked for

    interp, shape, dtype, ver = tflm.load(path)

    def run(x: np.ndarray) -> np.ndarray:
        return tflm.invoke(interp, x)

    def timed(x: np.ndarray, runs: int) -> np.ndarray:
        stamps = [0] * (runs + 1)
        stamps[0] = clock()
        for i in range(1, runs + 1):
            tflm.invoke(interp, x)
            stamps[i] = clock()
        return _per_call(stamps)

    kernels = "TFLM reference kernels (host build)"
    return Model("", ver, kernels, 1, shape, dtype.name, run, timed)


# not in PREFERENCE: TFLM runs only when asked for (``--backend tflm``, the ``tflm`` target)
_register("tflm", "tflite", "tflite_micro", "tflite-micro", _tflm_open)


def installed() -> List[str]:
    """Names of the backends importable here."""
    return [n for n in BACKENDS.names() if BACKENDS.get(n).available()]


def versions() -> Dict[str, str]:
    """Installed interpreter package versions (without importing them)."""
    out = {}
    for n in installed():
        out[n] = _dist_version(BACKENDS.get(n).pip_name)(None)
    return out
