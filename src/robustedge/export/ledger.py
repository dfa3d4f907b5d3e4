"""Size and sparsity ledger: one row per stage, from the PyTorch model to TFLite int8.

Each row: parameters, non-zeros, MACs (Conv2d/Linear, counted with forward hooks, groups
included), file size raw and gzip-compressed, and for exported files the zero weights they
still hold (for TFLite int8: counted in the int8 weight tensors read with the interpreter).
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from robustedge.export.formats import FORMATS, SPARSE_OF, Family

logger = logging.getLogger(__name__)

STRUCTURED = "physically smaller (structured: channels removed)"
UNSTRUCTURED = "zeros only; visible in compressed size (unstructured)"
DENSE = "dense (no sparsity to keep)"
SPARSE_MIN = 0.01  # weight zero fraction above which a model counts as sparse
_QPARAMS = ("_scale", "_zero_point")  # QDQ quantization parameters, not model weights


def file_sizes(path: Path) -> Dict[str, int]:
    raw = path.read_bytes()
    return {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0))}


def flash_sizes(path: Path) -> Dict[str, Any]:
    """The board's sizes of an exported file: ``flash_bytes`` (what a bundle stores: the file
    compressed with the bundle's default codec) and ``model_bytes`` (what the interpreter
    loads); the third size, peak RSS, is measured on the board."""
    from robustedge.codec import DEFAULT_CODEC, compress_bytes

    raw = path.read_bytes()
    packed = compress_bytes(raw, DEFAULT_CODEC)
    return {"flash_bytes": len(packed), "flash_codec": DEFAULT_CODEC, "model_bytes": len(raw)}


def weight_arrays(model: Any) -> List[np.ndarray]:
    """Conv/Linear weight matrices of a PyTorch model (where pruning puts its zeros)."""
    import torch.nn as nn

    return [
        m.weight.detach().cpu().numpy()
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]


def torch_stage(
    stage: str, model: Any, input_shape: Tuple[int, int, int], weights_file: Optional[Path]
) -> Dict[str, Any]:
    """Ledger row for a PyTorch model (its safetensors file gives the sizes)."""
    from robustedge.models import count_macs

    params = [p.detach().cpu().numpy() for p in model.parameters()]
    weights = weight_arrays(model)
    row = {
        "stage": stage,
        "params": int(sum(p.size for p in params)),
        "nonzeros": int(sum(np.count_nonzero(p) for p in params)),
        "weight_zeros": int(sum(w.size - np.count_nonzero(w) for w in weights)),
        "weight_count": int(sum(w.size for w in weights)),
        "macs": count_macs(model, input_shape)["dense"],
    }
    if weights_file is not None and weights_file.is_file():
        row.update(file_sizes(weights_file), file=weights_file.name)
    return row


def onnx_stage(path: Path, macs: int) -> Dict[str, Any]:
    """Ledger row for an ONNX file (initializers; BatchNorm may be folded into convs)."""
    from robustedge.export.onnx import onnx_weights

    arrays = [
        a for name, a in onnx_weights(path).items() if _is_weight(a) and not name.endswith(_QPARAMS)
    ]
    w = [a for a in arrays if a.ndim >= 2]
    return {
        "stage": path.name,
        "params": int(sum(a.size for a in arrays)),
        "nonzeros": int(sum(np.count_nonzero(a) for a in arrays)),
        "weight_zeros": int(sum(a.size - np.count_nonzero(a) for a in w)),
        "weight_count": int(sum(a.size for a in w)),
        "macs": macs,
        **file_sizes(path),
        "file": path.name,
    }


def _is_weight(a: np.ndarray) -> bool:
    """Float, int8 or int32 (quantized bias) arrays; int64 shape constants are not weights."""
    return a.ndim >= 1 and (a.dtype.kind == "f" or a.dtype in (np.int8, np.uint8, np.int32))


def tflite_constants(path: Path) -> List[Tuple[Dict[str, Any], np.ndarray]]:
    """(tensor details, values) of the constant weight/bias tensors of a .tflite file.

    Constants are the tensors with a data buffer (read with the ``tflite`` flatbuffer
    schema); values come from the interpreter's ``get_tensor``. Shape/padding constants
    (integer, not quantized) are left out.
    """
    import tflite
    from ai_edge_litert.interpreter import Interpreter

    buf = path.read_bytes()
    graph = tflite.Model.GetRootAsModel(buf, 0)
    sub = graph.Subgraphs(0)
    const = {
        i
        for i in range(sub.TensorsLength())
        if graph.Buffers(sub.Tensors(i).Buffer()).DataLength() > 0
    }
    interp = Interpreter(model_path=str(path))
    out = []
    for d in interp.get_tensor_details():
        if d["index"] not in const:
            continue
        quantized = len(d["quantization_parameters"]["scales"]) > 0
        if np.dtype(d["dtype"]).kind == "f" or quantized:
            out.append((d, np.array(interp.get_tensor(d["index"]))))
    return out


def tflite_stage(path: Path, macs: int) -> Dict[str, Any]:
    """Ledger row for a .tflite file; weight zeros are counted in rank >= 2 tensors."""
    consts = tflite_constants(path)
    w = [a for _d, a in consts if a.ndim >= 2]
    int8 = [a for d, a in consts if np.dtype(d["dtype"]) == np.int8 and a.ndim >= 2]
    row = {
        "stage": path.name,
        "params": int(sum(a.size for _d, a in consts)),
        "nonzeros": int(sum(np.count_nonzero(a) for _d, a in consts)),
        "weight_zeros": int(sum(a.size - np.count_nonzero(a) for a in w)),
        "weight_count": int(sum(a.size for a in w)),
        "macs": macs,
        **file_sizes(path),
        "file": path.name,
    }
    if int8:
        row["int8_weight_zeros"] = int(sum(a.size - np.count_nonzero(a) for a in int8))
    return row


def structure_of(meta: Dict[str, Any]) -> str:
    """``shrunk`` | ``masked`` | ``dense`` from model.json's ``structure`` note (written by
    robustedge.compress); a run without the note is ``dense``."""
    value = meta.get("structure")
    return value if value in ("shrunk", "masked") else "dense"


def stage_name(meta: Dict[str, Any], has_teacher: bool) -> str:
    """Ledger name of the run's own PyTorch model."""
    kind = {"shrunk": "physically shrunk student", "masked": "masked student"}.get(
        structure_of(meta), "student" if has_teacher else "model"
    )
    return f"PyTorch {kind}"


def verdict(meta: Dict[str, Any], student_row: Dict[str, Any]) -> str:
    """Which kind of saving applies: structured (smaller), unstructured (zeros) or none."""
    kind = structure_of(meta)
    if kind == "shrunk":
        return STRUCTURED
    frac = student_row["weight_zeros"] / max(1, student_row["weight_count"])
    if kind == "masked" or frac >= SPARSE_MIN:
        return UNSTRUCTURED
    return DENSE


def ratios(teacher_row: Dict[str, Any], row: Dict[str, Any]) -> Dict[str, float]:
    """Student / teacher ratios of params, non-zeros, MACs and (gzip) file size."""
    keys = ("params", "nonzeros", "macs", "bytes", "gzip_bytes")
    return {k: row[k] / teacher_row[k] for k in keys if teacher_row.get(k) and k in row}


def sparse_savings(made: Dict[str, Path], sparse_of: Dict[str, str]) -> Dict[str, Any]:
    """What the sparse encoding bought, per sparse format: its bytes against the dense
    format it was made beside (``sparse_of``), raw and gzip-compressed."""
    out: Dict[str, Any] = {}
    for fmt, dense in sparse_of.items():
        if fmt not in made or dense not in made:
            continue
        s, d = file_sizes(made[fmt]), file_sizes(made[dense])
        out[fmt] = {
            "dense_format": dense,
            "bytes": s["bytes"],
            "dense_bytes": d["bytes"],
            "saved_bytes": d["bytes"] - s["bytes"],
            "ratio": s["bytes"] / d["bytes"],
            "gzip_bytes": s["gzip_bytes"],
            "dense_gzip_bytes": d["gzip_bytes"],
        }
    return out


def zeros_survived(torch_row: Dict[str, Any], row: Dict[str, Any]) -> bool:
    """True when the exported weights hold at least as many zeros as the PyTorch weights."""
    return row.get("int8_weight_zeros", row["weight_zeros"]) >= torch_row["weight_zeros"]


def format_table(ledger: Dict[str, Any]) -> str:
    """Plain-text table of a ledger (for the CLI)."""
    head = (
        f"{'stage':<34} {'params':>9} {'nonzeros':>9} {'w-zeros':>8} {'MACs':>10} "
        f"{'bytes':>9} {'gzip':>9}  zeros kept"
    )
    lines = [head, "-" * len(head)]
    for r in ledger["stages"]:
        kept = {True: "yes", False: "NO", None: "-"}[r.get("zeros_survived")]
        lines.append(
            f"{r['stage'][:34]:<34} {r['params']:>9,} {r['nonzeros']:>9,} "
            f"{r['weight_zeros']:>8,} {r['macs']:>10,} {r.get('bytes', 0):>9,} "
            f"{r.get('gzip_bytes', 0):>9,}  {kept}"
        )
    lines.append(f"sparsity: {ledger['verdict']}")
    for fmt, v in (ledger.get("sparse_encoding") or {}).items():
        lines.append(
            f"{fmt}: {v['bytes']:,} B vs {v['dense_bytes']:,} B dense "
            f"({v['saved_bytes']:,} B saved by the sparse encoding)"
        )
    return "\n".join(lines)


def build_ledger(ctx: Any, made: Dict[str, Path]) -> Dict[str, Any]:
    """Ledger rows: teacher (if any), the run's PyTorch model, then every artifact.
    ``ctx``: the run (:class:`robustedge.export.context.RunContext`)."""
    teacher_row = _teacher_row(ctx)
    rows: List[Dict[str, Any]] = [teacher_row] if teacher_row else []
    student = torch_stage(
        stage_name(ctx.meta, ctx.teacher_dir() is not None),
        ctx.model,
        ctx.spec.input_shape,
        ctx.run_dir / "model.safetensors",
    )
    rows.append(student)
    for fmt, path in made.items():
        onnx = FORMATS[fmt].family is Family.ONNX
        row = onnx_stage(path, student["macs"]) if onnx else tflite_stage(path, student["macs"])
        row["stage"] = f"{fmt} ({path.name})"
        row["format"] = fmt
        row["zeros_survived"] = zeros_survived(student, row)
        row.update(flash_sizes(path))
        rows.append(row)
    return {
        "run": str(ctx.run_dir),
        "structure": structure_of(ctx.meta),
        "stages": rows,
        "verdict": verdict(ctx.meta, student),
        "student_vs_teacher": ratios(teacher_row, student) if teacher_row else None,
        "sparse_encoding": sparse_savings(made, dict(SPARSE_OF)),
        "notes": "MACs counted on the PyTorch graph (Conv2d/Linear, batch 1); weight "
        "zeros counted in rank>=2 weight tensors (int8 tensors for int8 formats).",
    }


def _teacher_row(ctx: Any) -> Optional[Dict[str, Any]]:
    """The dense teacher's row when the run names a loadable teacher (informative only)."""
    from robustedge.errors import RobustEdgeError
    from robustedge.models import load_model

    teacher = ctx.teacher_dir()
    if teacher is None:
        return None
    try:
        t_model, _ = load_model(teacher)
        return torch_stage(
            "PyTorch dense teacher", t_model, ctx.spec.input_shape, teacher / "model.safetensors"
        )
    except (RobustEdgeError, OSError, RuntimeError) as e:  # the teacher row is informative
        logger.warning("teacher %s not added to the ledger: %s", teacher, e)
        return None
