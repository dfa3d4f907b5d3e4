"""Microcontroller boards: the ``tflm`` target and what an MCU build of a bundle's model needs.

``bench --target tflm`` runs the bundle's int8 TFLite model on the TensorFlow Lite Micro
interpreter on this host (the unchanged board runner with ``--backend tflm``: clean accuracy,
the replayed PGD transfer set and Square against TFLM itself, worst case per image), and adds an
``mcu`` section measured by the same interpreter (:mod:`robustedge.device.board.tflm`):

- ``arena``: the tensor arena TFLM recorded (and confirmed minimal);
- ``flash``: the model's bytes as a TFLM build stores them (the ``.tflite`` flatbuffer as a
  constant array, no bundle codec: an MCU does not inflate xz), and with TFLM's LUT weight
  compression where the weights allow it (lossless: its outputs are checked identical);
- ``ops``: the operators used, against TFLM's kernels (unsupported ones named in one line);
- ``parity``: TFLM's int8 outputs against the TFLite interpreter's on every evaluation image.

- ``ethos_u``: vela's estimate for an Ethos-U NPU (``tflm:ethos-u55-256`` names the
  configuration; default ``ethos-u55-128`` when vela is installed): SRAM, flash, estimated
  cycles and time, operators left to the CPU (:mod:`robustedge.device.host.vela`).

No latency: host time of an MCU interpreter says nothing about an MCU.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from robustedge.device.board import tflm
from robustedge.device.board.backends import BACKENDS, open_model
from robustedge.device.board.bundle_format import verify_bundle
from robustedge.device.board.onboard import load_npz, model_path, pick_format, to_model_input
from robustedge.device.host import vela
from robustedge.device.host.targets import TARGETS, BenchSettings, LocalTarget, bench_config
from robustedge.errors import RobustEdgeError
from robustedge.export.formats import FORMATS, Family

logger = logging.getLogger(__name__)

BACKEND = "tflm"
PARITY_BACKENDS = ("litert", "tflite-runtime")  # the TFLite interpreter TFLM is compared with


def mcu_format(manifest: Dict[str, Any], fmt: Optional[str]) -> str:
    """The format the tflm target runs: ``fmt``, else the bundle's first int8 TFLite format;
    RobustEdgeError (one line) when the bundle has none or ``fmt`` is not int8 TFLite."""
    formats = manifest.get("formats") or {}
    tflite = [n for n in formats if n in FORMATS and FORMATS[n].family is Family.TFLITE]
    int8 = [n for n in tflite if FORMATS[n].quantized]
    if fmt is None:
        if not int8:
            raise RobustEdgeError(
                "the tflm target runs an int8 TFLite model and this bundle has none "
                f"(has: {', '.join(formats) or 'nothing'}): bundle a tflite-int8 export"
            )
        return int8[0]
    if fmt not in int8:
        raise RobustEdgeError(
            f"the tflm target runs int8 TFLite formats "
            f"({', '.join(int8) or 'none in this bundle'}), not '{fmt}'"
        )
    return fmt


@TARGETS.register("tflm")
class TflmTarget(LocalTarget):
    """TensorFlow Lite Micro on this host: an MCU's interpreter, arena and flash, measured;
    ``emulated`` because host time says nothing about a microcontroller (no latency is taken,
    and latency budgets refuse it)."""

    name = "tflm"
    emulated = True
    families = (Family.TFLITE.value,)
    prefixes = ("tflm:",)
    usage = "tflm[:ETHOS_U_CONFIG] (TensorFlow Lite Micro on this host; vela estimates)"

    @classmethod
    def formats(cls) -> Tuple[str, ...]:
        """The int8 TFLite formats (TFLM runs what an MCU runs)."""
        return tuple(f for f in super().formats() if FORMATS[f].quantized)

    @classmethod
    def from_spec(cls, spec: str, **kw: Any) -> TflmTarget:
        _, _, accelerator = spec.partition(":")
        return cls(python=kw.get("python"), accelerator=accelerator or None)

    @classmethod
    def check_spec(cls, spec: str) -> None:
        _, sep, accelerator = spec.partition(":")
        if sep:
            vela.check_accelerator(accelerator)

    def __init__(self, python: Optional[str] = None, accelerator: Optional[str] = None) -> None:
        super().__init__(None, python=python)
        self.accelerator = accelerator

    def bench(self, bundle: Path, cfg: BenchSettings = None) -> Dict[str, Any]:
        cfg = bench_config(cfg)
        if not BACKENDS.get(BACKEND).available():
            raise RobustEdgeError(f"the tflm target needs TFLM: pip install {tflm.PIP_NAME}")
        if cfg.backend not in (None, BACKEND):
            raise RobustEdgeError(f"the tflm target runs the tflm backend, not '{cfg.backend}'")
        manifest = verify_bundle(bundle)
        fmt = mcu_format(manifest, cfg.format)
        with tempfile.TemporaryDirectory(prefix="robustedge-tflm-") as tmp:
            data = model_bytes(bundle, manifest, fmt, Path(tmp))
            ops = tflm.ops(data)
            if ops["unsupported"] or ops["failing"]:
                raise RobustEdgeError(f"{fmt} cannot run on TFLM: {ops['line']}")
            mcu = mcu_measures(bundle, manifest, fmt, data, Path(tmp))
            mcu["ethos_u"] = self.ethos_u(Path(tmp) / "plain.tflite")
        results = super().bench(bundle, cfg.replace(backend=BACKEND, format=fmt, runs=0))
        results["mcu"] = {"ops": ops, **mcu}
        results["latency_note"] = "not measured: host time of TFLM is no microcontroller's"
        return results

    def ethos_u(self, model: Path) -> Dict[str, Any]:
        """vela's Ethos-U estimate for ``model`` (the named configuration, else the default
        one when vela is installed; otherwise what to install)."""
        if self.accelerator is None and not vela.accelerators():
            return {"skipped": f"no vela: pip install {vela.PIP_NAME}"}
        return vela.estimate(model, self.accelerator or vela.DEFAULT_ACCELERATOR)


def model_bytes(bundle: Path, manifest: Dict[str, Any], fmt: str, tmp: Path) -> bytes:
    """The bytes of format ``fmt``'s model as the interpreter loads them (inflated, checked)."""
    _, art = pick_format(manifest, fmt)
    path, _ = model_path(bundle / art["file"], art, tmp)
    return path.read_bytes()


def mcu_measures(
    bundle: Path, manifest: Dict[str, Any], fmt: str, data: bytes, tmp: Path
) -> Dict[str, Any]:
    """Arena, flash (plain and LUT-compressed) and parity of the model ``data`` of ``fmt``."""
    _, art = pick_format(manifest, fmt)
    sets = {name: load_npz(bundle / rel) for name, rel in manifest["eval_sets"].items()}
    packed, lut = tflm.lut_compress(data)
    plain = tmp / "plain.tflite"
    plain.write_bytes(data)
    parity = tflite_parity(plain, art["input"], sets)
    if lut["compressed"]:
        lut_file = tmp / "lut.tflite"
        lut_file.write_bytes(packed)
        lut["identical_outputs"] = identical_outputs(plain, lut_file, art["input"], sets)
        lut["arena"] = tflm.arena(packed)
    return {
        "format": fmt,
        "arena": tflm.arena(data),
        "flash": {
            "tflm_flash_bytes": len(data),
            "lut_flash_bytes": len(packed),
            "lut": lut,
            "how": "the .tflite flatbuffer a TFLM build keeps in flash (no bundle codec); "
            "lut: TFLM's LUT weight compression where it makes a tensor smaller",
        },
        "parity": parity,
    }


def _raw_outputs(model: Any, ispec: Dict[str, Any], x: np.ndarray) -> np.ndarray:
    xm = to_model_input(x, ispec)
    return np.stack([np.asarray(model.run(xm[i : i + 1])).reshape(-1) for i in range(len(xm))])


def tflite_parity(path: Path, ispec: Dict[str, Any], sets: Dict[str, Any]) -> Dict[str, Any]:
    """TFLM's raw int8 outputs against the TFLite interpreter's (BUILTIN_REF kernels) on every
    evaluation image: per set the share of images with the same top class, with bit-identical
    outputs, and the largest difference in output steps."""
    ref_name = next((n for n in PARITY_BACKENDS if BACKENDS.get(n).available()), None)
    if ref_name is None:
        return {"skipped": "no TFLite interpreter installed (pip install ai-edge-litert)"}
    ref = open_model(str(path), 1, True, ref_name)
    micro = open_model(str(path), 1, False, BACKEND)
    out: Dict[str, Any] = {"reference": f"{ref_name} {ref.version} BUILTIN_REF"}
    for name, (x, _) in sets.items():
        a, b = _raw_outputs(micro, ispec, x), _raw_outputs(ref, ispec, x)
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
        out[name] = {
            "n": int(len(x)),
            "same_class": round(float((a.argmax(1) == b.argmax(1)).mean()), 6),
            "bit_identical": round(float((diff.max(1) == 0).mean()), 6),
            "max_step_diff": int(diff.max()) if diff.size else 0,
        }
    return out


def identical_outputs(a: Path, b: Path, ispec: Dict[str, Any], sets: Dict[str, Any]) -> bool:
    """Whether models ``a`` and ``b`` give bit-identical outputs under TFLM on every image."""
    ma, mb = open_model(str(a), 1, False, BACKEND), open_model(str(b), 1, False, BACKEND)
    return all(
        np.array_equal(_raw_outputs(ma, ispec, x), _raw_outputs(mb, ispec, x))
        for x, _ in sets.values()
    )


def summary_lines(mcu: Optional[Dict[str, Any]]) -> List[str]:
    """The ``mcu`` section of a tflm result as lines for people (none without one)."""
    if not isinstance(mcu, dict):
        return []
    a, fl, eth = mcu["arena"], mcu["flash"], mcu.get("ethos_u") or {}
    lut = fl["lut_flash_bytes"]
    lines = [
        f"TFLM arena {a['arena_bytes']} bytes (recorded {a['recorded_bytes']}: head "
        f"{a['head_bytes']}, tail {a['tail_bytes']}; 64-bit host build)",
        f"TFLM flash {fl['tflm_flash_bytes']} bytes"
        + (f", {lut} with LUT weight compression" if fl["lut"].get("compressed") else ""),
        f"ops: {mcu['ops']['line']}",
    ]
    for name, p in mcu["parity"].items():
        if isinstance(p, dict):
            lines.append(
                f"TFLM vs {mcu['parity'].get('reference')} on {name}: same class "
                f"{100 * p['same_class']:.2f}%, bit-identical {100 * p['bit_identical']:.2f}%"
            )
    if "cycles" in eth:
        cpu = ", ".join(eth["cpu_ops"]) or "none"
        lines.append(
            f"{eth['accelerator']} (ESTIMATE, vela): {eth['time_ms']:.4f} ms, {eth['cycles']} "
            f"cycles at {eth['clock_mhz']:g} MHz, SRAM {eth['sram_bytes']} B, flash "
            f"{eth['flash_bytes']} B, CPU ops: {cpu}"
        )
    elif eth.get("skipped"):
        lines.append(f"Ethos-U estimate skipped: {eth['skipped']}")
    return lines
