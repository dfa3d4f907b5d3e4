"""TensorFlow Lite Micro on the host: the interpreter an MCU build runs, and what it needs.

The ``tflm`` backend opens a ``.tflite`` file with the TFLM interpreter's Python bindings
(pip ``tflite-micro``; its kernels are TFLM's own, the ones a Cortex-M build runs without
CMSIS-NN), so accuracy, the transfer set and Square run on TFLM itself. Three MCU measures come
from the same interpreter:

- :func:`arena`: the tensor arena TFLM really used, from its recording allocator
  (``InterpreterConfig.kAllocationRecording``), and the smallest arena the interpreter really
  loads and runs the model in (bisection around the recorded total).
  The host build is 64-bit: the arena's *head* (tensors, laid out by TFLM's memory planner) is
  what a 32-bit MCU needs too; its *tail* (persistent structs holding pointers) is smaller there.
- :func:`ops`: the operators the model uses, each judged by the interpreter (a model that loads
  uses only supported ops; otherwise each op is tried alone: unsupported ones are named).
- :func:`lut_compress`: TFLM's own weight compression (look-up tables per output channel,
  ``tflite_micro.compression``; a DECODE op expands them when the model runs), applied to each
  int8 weight tensor whose channels take few enough distinct values that it gets smaller.

Standard library, numpy and tflite-micro only (it ships in bundles); tflite-micro is imported
inside the functions.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import math
import os
import re
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from robustedge.errors import RobustEdgeError

logger = logging.getLogger(__name__)

PIP_NAME = "tflite-micro"
ARENA_ALIGN = 16  # TFLM aligns arena allocations to 16 bytes
PROBE_ARENA = 64 << 20  # the arena the recording run gets (64 MiB: more than any MCU has)
MAX_LUT_BITS = 7  # TFLM's LUT compression takes 1-7 index bits
_TOTAL = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_MISSING = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")


class TFLMError(RobustEdgeError):
    """The TFLM interpreter refused or failed a model (the message is TFLM's own first line)."""


@contextlib.contextmanager
def captured_stderr() -> Iterator[List[str]]:
    """Collect what C++ code writes to file descriptor 2 (TFLM reports there) into the list
    yielded; the lines are filled in when the block ends."""
    lines: List[str] = []
    fd = 2
    with tempfile.TemporaryFile() as f:
        saved = os.dup(fd)
        os.dup2(f.fileno(), fd)
        try:
            yield lines
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            f.seek(0)
            lines.extend(ln.strip() for ln in f.read().decode(errors="replace").splitlines())


def _runtime() -> Any:
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise RobustEdgeError(f"the tflm target needs TFLM: pip install {PIP_NAME}") from None
    return runtime


def _reason(lines: List[str], exc: BaseException) -> str:
    """TFLM's explanation of a failure: the first line naming a cause, else the exception."""
    for ln in lines:
        if ln and not ln.startswith("[RecordingMicroAllocator]"):
            return ln
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def interpreter(data: bytes, arena_bytes: int = PROBE_ARENA) -> Any:
    """A TFLM interpreter over ``data`` with an arena of ``arena_bytes`` (recording
    allocations); TFLMError with TFLM's own reason when it refuses the model."""
    runtime = _runtime()
    with captured_stderr() as lines:
        try:
            return runtime.Interpreter.from_bytes(bytes(data), arena_size=int(arena_bytes))
        except Exception as e:  # TFLM raises RuntimeError; a malformed file anything
            err = e
    raise TFLMError(f"TFLM cannot load the model: {_reason(lines, err)}")


def invoke(interp: Any, x: np.ndarray) -> np.ndarray:
    """One inference of the batch-1 input ``x`` (model dtype and layout): the raw output."""
    with captured_stderr() as lines:
        try:
            interp.set_input(x, 0)
            interp.invoke()
            return np.array(interp.get_output(0))
        except Exception as e:
            err = e
    raise TFLMError(f"TFLM failed to run the model: {_reason(lines, err)}")


def input_spec(interp: Any) -> Tuple[Tuple[int, ...], np.dtype]:
    """The interpreter's input shape and dtype."""
    d = interp.get_input_details(0)
    return tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"])


def recorded(interp: Any) -> Dict[str, int]:
    """The arena ``interp`` used so far (after an invoke): total, head, tail bytes."""
    with captured_stderr() as lines:
        interp.print_allocations()
    found = {m.group(1): int(m.group(2)) for m in map(_TOTAL.search, lines) if m}
    if set(found) != {"total", "head", "tail"}:
        raise TFLMError("TFLM's recording allocator reported no arena totals")
    return found


def runs_with(data: bytes, x: np.ndarray, arena_bytes: int) -> bool:
    """Whether TFLM loads the model into an arena of ``arena_bytes`` and runs ``x``. Tried in
    a forked child where the OS has fork: TFLM can crash (SIGSEGV) on an arena a little too
    small, and a crash counts as "does not run"."""
    if not hasattr(os, "fork"):
        return _runs_here(data, x, arena_bytes)
    pid = os.fork()
    if pid == 0:  # the child: answer through the exit status only, die quietly
        faulthandler.disable()
        try:
            ok = _runs_here(data, x, arena_bytes)
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _runs_here(data: bytes, x: np.ndarray, arena_bytes: int) -> bool:
    try:
        invoke(interpreter(data, arena_bytes), x)
    except TFLMError:
        return False
    return True


def smallest_arena(data: bytes, x: np.ndarray, recorded_total: int) -> int:
    """The smallest arena (bytes) TFLM loads and runs the model in, by bisection from the
    recorded total (initialisation also takes temporary buffers the recording does not keep,
    so the recorded total can be a little short)."""
    lo, hi, step = max(0, recorded_total - ARENA_ALIGN), recorded_total, 1024
    while not runs_with(data, x, hi):
        lo, hi, step = hi, hi + step, step * 2
        if hi > PROBE_ARENA:
            raise TFLMError(f"TFLM does not run the model in {PROBE_ARENA} bytes of arena")
    if runs_with(data, x, lo):
        lo = 0  # the recording over-counts: search all the way down
    while hi - lo > 1:  # invariant: lo fails, hi runs
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs_with(data, x, mid) else (mid, hi)
    return hi


def arena(data: bytes) -> Dict[str, Any]:
    """The tensor arena the model needs: what TFLM's recording allocator recorded after one
    invoke (total, head, tail) and the smallest arena it really loads and runs in
    (``arena_bytes``, :func:`smallest_arena`)."""
    interp = interpreter(data)
    shape, dtype = input_spec(interp)
    x = np.zeros(shape, dtype)
    invoke(interp, x)
    used = recorded(interp)
    return {
        "arena_bytes": smallest_arena(data, x, used["total"]),
        "recorded_bytes": used["total"],
        "head_bytes": used["head"],
        "tail_bytes": used["tail"],
        "how": "smallest arena TFLM loads and runs the model in (bisection from the "
        "RecordingMicroAllocator's total after one invoke); host build, 64-bit: a 32-bit MCU "
        "needs the same head (tensors) and a smaller tail (structs with pointers)",
    }


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def ops_used(data: bytes) -> Dict[str, int]:
    """Builtin operator name -> how many times the model's subgraphs use it."""
    fb = _schema()
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    if bytes(data[4:8]) != b"TFL3":
        raise TFLMError("not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = fb.Model.GetRootAsModel(bytes(data), 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            codes.append(
                names.get(code, f"BUILTIN_{code}")
                if code != fb.BuiltinOperator.CUSTOM
                else f"CUSTOM:{(oc.CustomCode() or b'').decode(errors='replace')}"
            )
        counts: Dict[str, int] = {}
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            for o in range(sg.OperatorsLength()):
                name = codes[sg.Operators(o).OpcodeIndex()]
                counts[name] = counts.get(name, 0) + 1
    except Exception as e:  # a malformed flatbuffer raises struct.error, IndexError, ...
        raise TFLMError(f"not a TFLite flatbuffer: {type(e).__name__}: {e}") from None
    return counts


def ops(data: bytes) -> Dict[str, Any]:
    """The ops the model uses, judged by the TFLM interpreter: ``unsupported`` (no TFLM kernel)
    and ``failing`` (a kernel that refuses this use, with TFLM's reason); ``line``: one line
    for people."""
    used = ops_used(data)
    unsupported: List[str] = []
    failing: Dict[str, str] = {}
    try:
        interp = interpreter(data)
        shape, dtype = input_spec(interp)
        invoke(interp, np.zeros(shape, dtype))
    except TFLMError as e:
        failing["model"] = str(e).split(": ", 1)[-1]  # replaced by the op to blame, if any
        for name in used:
            verdict = _probe_op(data, name)
            if verdict == "missing":
                unsupported.append(name)
            elif verdict:
                failing[name] = verdict
        if unsupported or len(failing) > 1:
            failing.pop("model")
    line = (
        "all ops supported by TFLM"
        if not (unsupported or failing)
        else "; ".join(
            ([f"unsupported by TFLM: {', '.join(unsupported)}"] if unsupported else [])
            + [f"{k} fails in TFLM: {v}" for k, v in failing.items()]
        )
    )
    return {"used": used, "unsupported": unsupported, "failing": failing, "line": line}


def _probe_op(data: bytes, name: str) -> Optional[str]:
    """Load a copy of the model that keeps only the operators of type ``name`` (each with its
    own tensors): None when TFLM prepares them, "missing" when it has no kernel for them,
    else TFLM's reason."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    model = model_editor.read(bytes(data))
    for sg in model.subgraphs:
        sg.operators = [op for op in sg.operators if op.opcode_name == name]
    try:
        interpreter(bytes(model.build()))
    except TFLMError as e:
        missing = _MISSING.search(str(e))
        return "missing" if missing or "find op" in str(e) else str(e).split(": ", 1)[-1]
    return None


def lut_compress(data: bytes) -> Tuple[bytes, Dict[str, Any]]:
    """TFLM's LUT weight compression on every int8 weight tensor it makes smaller (one table
    per output channel, the fewest index bits that hold each channel's distinct values):
    the compressed model and what was compressed; ``data`` itself when the file would not
    get smaller."""
    from tflite_micro.tensorflow.lite.micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import lut, model_editor, spec

    model = model_editor.read(bytes(data))
    specs, tensors = [], []
    for s, sg in enumerate(model.subgraphs):
        for i, t in enumerate(sg.tensors):
            method = _lut_method(t, spec)
            if method is None:
                continue
            with captured_stderr():
                res = lut.LutCompressor().compress(t, method)
            new = len(res.encoded_data) + len(res.ancillary_data)
            if new < len(t.buffer.data):
                specs.append(spec.Tensor(s, i, [method]))
                tensors.append(
                    {
                        "tensor": t.name,
                        "bytes": len(t.buffer.data),
                        "lut_bytes": new,
                        "bits": method.index_bitwidth,
                    }
                )
    if not specs:
        return bytes(data), {"tensors": [], "compressed": False}
    with captured_stderr():
        out = bytes(compression.compress(bytes(data), specs))
    if len(out) >= len(data):  # the DECODE op and its metadata outweigh what the tables save
        return bytes(data), {"tensors": [], "compressed": False}
    return out, {"tensors": tensors, "compressed": True}


def _lut_method(t: Any, spec: Any) -> Optional[Any]:
    """The LUT spec for tensor ``t`` (per channel on axis 0, the fewest bits), or None when
    it is no int8 weight tensor or its channels hold more than 2**MAX_LUT_BITS values."""
    if t.buffer is None or not len(t.buffer.data) or len(t.shape) < 2:
        return None
    a = t.array
    if a.dtype != np.int8:
        return None
    distinct = max(len(np.unique(c)) for c in a)
    bits = max(1, math.ceil(math.log2(max(distinct, 2))))
    if bits > MAX_LUT_BITS:
        return None
    return spec.LookUpTableCompression(bits, spec.PerChannel(0))


def load(path: str) -> Tuple[Any, Tuple[int, ...], np.dtype, str]:
    """A TFLM interpreter over the model file ``path``, its input shape and dtype, and the
    tflite-micro version (the ``tflm`` backend of ``backends.py`` wraps it)."""
    from importlib.metadata import PackageNotFoundError, version

    with open(path, "rb") as f:
        interp = interpreter(f.read())
    shape, dtype = input_spec(interp)
    try:
        ver = version(PIP_NAME)
    except PackageNotFoundError:
        ver = "unknown"
    return interp, shape, dtype, ver
