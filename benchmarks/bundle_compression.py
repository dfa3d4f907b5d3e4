"""Bundle compression benchmark: which codec a bundle stores models with, and what inflating
them costs the board.

For each model file given (``--models F ...``: real exported .tflite files, dense int8 and
sparse-encoded; default: the LeNet-5 int8 teacher under benchmarks/results when it exists): raw
bytes, gzip -9 and xz -9 bytes (the two standard-library codecs a board's Python has), and the
time ``bundle_format.inflate_model`` takes to stream-decompress, sha256-check and write the model
to a temporary file, as the board runner does before loading it (median of ``--reps``; this
2-core AMD EPYC x86_64 host, one thread). With ``--qemu`` and the cached qemu-aarch64 userland
(root), the same decompression timed by the emulated aarch64 Python 3.11 (EMULATED: relative
only). The codec with the smaller files on every model is the bundle default.

    .venv/bin/python benchmarks/bundle_compression.py --models A.tflite B.tflite [--qemu]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, table  # noqa: E402

MEASURED = Path(__file__).resolve().parent / "measured"
DEFAULT = RESULTS / "device_model" / "export" / "model_int8.tflite"
QEMU_ROOT = Path.home() / ".cache" / "robustedge" / "qemu" / "aarch64" / "rootfs"
QEMU_SCRIPT = """
import gzip, lzma, sys, time, json
out = {}
for name in sys.argv[1:]:
    row = {}
    for codec, fn in (("xz", lzma.decompress), ("gzip", gzip.decompress)):
        data = open(name + "." + codec, "rb").read()
        t = []
        for _ in range(5):
            t0 = time.perf_counter(); fn(data); t.append(time.perf_counter() - t0)
        row[codec] = sorted(t)[2] * 1e3
    out[name] = row
print(json.dumps(out))
"""


def inflate_ms(raw: bytes, codec: str, reps: int) -> float:
    from robustedge.device.board.bundle_format import CODECS, compress_bytes, inflate_model

    with tempfile.TemporaryDirectory() as tmp:
        stored = Path(tmp) / ("m.tflite" + CODECS[codec])
        stored.write_bytes(compress_bytes(raw, codec))
        art = {
            "file": stored.name,
            "codec": codec,
            "model_bytes": len(raw),
            "model_sha256": hashlib.sha256(raw).hexdigest(),
        }
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            with open(Path(tmp) / "m.tflite", "wb") as f:
                inflate_model(stored, art, f)
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def qemu_times(models: List[Path]) -> Dict[str, Dict[str, float]]:
    """Decompression ms per model and codec under the emulated aarch64 Python (chroot)."""
    from robustedge.device.board.bundle_format import compress_bytes

    if os.geteuid() != 0 or not (QEMU_ROOT / "usr/bin/python3.11").exists():
        return {}
    work = QEMU_ROOT / "tmp" / "bench_compression"
    work.mkdir(parents=True, exist_ok=True)
    try:
        names = []
        for i, m in enumerate(models):
            raw = m.read_bytes()
            for codec in ("xz", "gzip"):
                (work / f"m{i}.{codec}").write_bytes(compress_bytes(raw, codec))
            names.append(f"/tmp/bench_compression/m{i}")
        (work / "t.py").write_text(QEMU_SCRIPT)
        cmd = ["chroot", str(QEMU_ROOT), "/usr/bin/python3.11", "/tmp/bench_compression/t.py"]
        proc = subprocess.run(cmd + names, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            print(f"qemu-aarch64 skipped: {proc.stderr.strip()[-200:]}")
            return {}
        got = json.loads(proc.stdout)
        return {str(m): got[n] for m, n in zip(models, names)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", type=Path, default=None)
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--qemu", action="store_true", help="also time under qemu-aarch64 (root)")
    args = ap.parse_args()
    from robustedge.device.board.bundle_format import compress_bytes

    models = args.models or ([DEFAULT] if DEFAULT.is_file() else [])
    if not models:
        sys.exit("give --models FILE.tflite ... (no default model found)")
    rows: List[Dict[str, Any]] = []
    for m in models:
        raw = m.read_bytes()
        xz, gz = len(compress_bytes(raw, "xz")), len(gzip.compress(raw, 9, mtime=0))
        assert gz == len(compress_bytes(raw, "gzip"))
        rows.append(
            {
                "model": str(m),
                "bytes": len(raw),
                "gzip_bytes": gz,
                "xz_bytes": xz,
                "xz_vs_gzip": round(xz / gz, 4),
                "inflate_ms_xz": round(inflate_ms(raw, "xz", args.reps), 3),
                "inflate_ms_gzip": round(inflate_ms(raw, "gzip", args.reps), 3),
            }
        )
    emulated = qemu_times(models) if args.qemu else {}
    for r in rows:
        if r["model"] in emulated:
            r["qemu_aarch64_decompress_ms"] = {
                k: round(v, 3) for k, v in emulated[r["model"]].items()
            }
    head = ["model", "bytes", "gzip B", "xz B", "xz/gzip", "inflate xz ms", "inflate gz ms"]
    body = [
        [Path(r["model"]).name if len(r["model"]) < 40 else "..." + r["model"][-37:],
         r["bytes"], r["gzip_bytes"], r["xz_bytes"], r["xz_vs_gzip"], r["inflate_ms_xz"],
         r["inflate_ms_gzip"]]
        for r in rows
    ]  # fmt: skip
    print(table(head, body))
    for r in rows:
        if "qemu_aarch64_decompress_ms" in r:
            print(
                f"EMULATED qemu-aarch64 decompress ms {r['model']}: "
                f"{r['qemu_aarch64_decompress_ms']}"
            )
    load = os.getloadavg()
    payload = {
        "benchmark": "bundle_compression",
        "hardware": {
            "machine": platform.machine(),
            "cpu": _cpu(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "threads": 1,
            "load_average": [round(v, 2) for v in load],
        },
        "reps": args.reps,
        "rows": rows,
        "winner": "xz" if all(r["xz_bytes"] < r["gzip_bytes"] for r in rows) else "mixed",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    MEASURED.mkdir(exist_ok=True)
    out = MEASURED / "bundle_compression.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
