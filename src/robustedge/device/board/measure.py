"""What the board measures, as data: ``Measurements`` (saved as JSON) plus its pieces.

Latency: warm-up invokes, then ``runs`` timed invokes of one sample (set input, invoke, read
output), each timed by consecutive ``perf_counter_ns`` stamps; p50/p90/p99/mean in ms. Peak
memory is the process' max RSS (``resource.getrusage``). Board info names the machine, CPU, OS,
Python, numpy and interpreter versions. Sizes: flash bytes (stored), model bytes (loaded),
peak RSS (running). stdlib + numpy only.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from robustedge.config import default_of
from robustedge.device.board import probe
from robustedge.device.board.config import BenchConfig

SCHEMA = "robustedge.device.results/1"


@dataclass
class Latency:
    """Per-invoke latency of one sample, in milliseconds."""

    warmup: int
    runs: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    emulated: bool = False
    conditions: Dict[str, Any] = field(default_factory=dict)  # probe.conditions before/after
    problems: List[str] = field(default_factory=list)  # throttling/frequency changes seen
    throttled: bool = False


@dataclass
class Measurements:
    """Everything one bundle run on one board produced (JSON via ``to_dict``)."""

    format: str
    model_file: str
    model_bytes: int
    backend: str
    backend_version: str
    kernels: str
    threads: int
    reference_kernels: bool
    emulated: bool
    accuracy: Dict[str, float]
    n_eval: Dict[str, int]
    robust: List[Dict[str, Any]]  # per attack run on the board (Square), each named
    latency: Optional[Latency]
    peak_rss_mb: float
    board: Dict[str, Any]
    parity: Dict[str, Any]
    output_sha256: Dict[str, str] = field(default_factory=dict)
    bundle: Dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    # Three sizes per model: flash_bytes (what the board stores: the compressed file, or the
    # model file itself when stored plain), model_bytes (what the interpreter loads) and
    # peak_rss_mb (while running). decompress_ms: inflating the model before loading it.
    flash_bytes: Optional[int] = None
    codec: Optional[str] = None
    decompress_ms: Optional[float] = None
    # The headline on-board robust accuracy: worst case per image over the replayed transfer
    # set and the on-board Square attack (``onboard.worst_case``), with its label.
    worst_case: Optional[Dict[str, Any]] = None
    # Per-image outcomes, so that two runs can be compared image by image (a paired test):
    # eval set -> "classified correctly" bits (``pack_outcomes``), plus ``robust`` (the worst
    # case per image on its ``worst_case["n"]`` images) and ``images``: the sha256 of the clean
    # set file, which says whether two runs saw the same images.
    outcomes: Dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        if self.emulated and d["latency"] is not None:
            d["latency_note"] = "emulated (QEMU): not a board latency"
        return d


def pack_outcomes(verdicts: np.ndarray) -> str:
    """Per-image booleans -> a compact string: base64 of the bits (``np.packbits``, big-endian
    bit order, the last byte padded with zeros): 450 images take 76 characters."""
    import base64

    bits = np.packbits(np.asarray(verdicts, dtype=bool).ravel())
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_outcomes(text: str, n: int) -> np.ndarray:
    """The inverse of :func:`pack_outcomes` for ``n`` images; ValueError when ``text`` does not
    hold ``n`` bits (a corrupt or foreign results file)."""
    import base64
    import binascii

    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as e:
        raise ValueError(f"per-image outcomes are not base64 ({e})") from None
    if n < 0 or len(raw) != (n + 7) // 8:
        raise ValueError(f"per-image outcomes hold {len(raw) * 8} bits, not {n} images")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n].astype(bool)


def square_name(queries: int, restarts: int = 1) -> str:
    """``Square-1000`` (queries per image), ``Square-200x5`` with restarts."""
    return f"Square-{queries}" + (f"x{restarts}" if restarts > 1 else "")


def transfer_name(record: Optional[Dict[str, Any]]) -> str:
    """``PGD-20 transfer`` / ``PGD-20x5 transfer`` from the bundle's ``transfer_attack``."""
    rec = record if isinstance(record, dict) else {}
    attack = str(rec.get("attack") or "").upper().replace("_", "-")
    if not attack:
        return "transfer set"
    steps, restarts = rec.get("steps"), rec.get("restarts") or 1
    name = attack + (f"-{steps}" if steps else "") + (f"x{restarts}" if restarts > 1 else "")
    return f"{name} transfer"


def weaker_than_default(queries: int, restarts: int, n: int, n_total: int) -> Optional[str]:
    """None when the on-board Square ran at least the default budget (BenchConfig's
    ``square_queries`` x ``square_restarts`` queries per image) on all ``n_total`` images; else
    the label that results and reports carry, e.g.
    ``weaker than default: Square-100 on 50 of 450 images``."""
    if queries <= 0:
        return "weaker than default: no on-board Square attack"
    budget = default_of(BenchConfig, "square_queries") * default_of(BenchConfig, "square_restarts")
    if queries * restarts >= budget and n >= n_total:
        return None
    return f"weaker than default: {square_name(queries, restarts)} on {n} of {n_total} images"


def time_invokes(
    timed: Callable[[Any, int], np.ndarray],
    arg: Any,
    runs: int,
    warmup: int,
) -> np.ndarray:
    """Seconds per invoke: ``warmup`` untimed invokes, then ``timed(arg, runs)`` (a backend's
    inlined loop reading the clock once per invoke)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0 (got {runs}, {warmup})")
    if warmup:
        timed(arg, warmup)
    return timed(arg, runs)


def timed_latency(
    timed: Callable[[Any, int], np.ndarray],
    arg: Any,
    runs: int,
    warmup: int,
    threads: int,
    emulated: bool,
    sys_root: str = "/sys",
) -> Latency:
    """Warm up, read the board's conditions, time ``runs`` invokes, read them again: a Latency
    that says whether the board throttled or changed frequency while it was timed."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0 (got {runs}, {warmup})")
    if warmup:
        timed(arg, warmup)
    before = probe.conditions(sys_root)
    times = timed(arg, runs)
    after = probe.conditions(sys_root)
    lat = summarize(times, warmup, threads, emulated)
    lat.conditions = {"before": before, "after": after}
    lat.problems = probe.throttle_problems(before, after)
    lat.throttled = bool(lat.problems)
    return lat


def summarize(times: np.ndarray, warmup: int, threads: int, emulated: bool) -> Latency:
    ms = times * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return Latency(
        warmup,
        len(ms),
        threads,
        round(p50, 5),
        round(p90, 5),
        round(p99, 5),
        round(float(ms.mean()), 5),
        round(float(ms.min()), 5),
        emulated,
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB.

    Linux: ``VmHWM`` from /proc/self/status, which starts afresh at exec. ``ru_maxrss`` is the
    fallback only: Linux carries it over from the parent across fork+exec, so a runner started
    by a torch-loaded process would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 2)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not POSIX
        return float("nan")
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024 if sys.platform == "darwin" else 1024), 2)


# ARM Ltd (implementer 0x41) CPU parts seen on boards and in QEMU.
ARM_PARTS = {
    "0xc07": "Cortex-A7",
    "0xc0f": "Cortex-A15",
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
}


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """CPU model name (x86 'model name', Raspberry Pi 'Model'/'Hardware', ARM 'CPU part')."""
    try:
        text = open(cpuinfo).read()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, _, val = line.partition(":")
        fields.setdefault(key.strip(), val.strip())
    for key in ("Model", "model name", "Hardware", "Processor", "cpu model"):
        if fields.get(key):
            return fields[key]
    part = fields.get("CPU part")
    if part:
        name = ARM_PARTS.get(part.lower()) if fields.get("CPU implementer") == "0x41" else None
        return name or f"ARM CPU part {part} (implementer {fields.get('CPU implementer')})"
    return "unknown"


def os_name() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def looks_emulated(machine: str, cpu: str, model: Optional[str] = None) -> bool:
    """An ARM Python reading an x86 /proc/cpuinfo (qemu-user shows the host's CPU), the
    cpuinfo that ``robustedge device setup-qemu`` writes into its userland, or QEMU's ``virt``
    machine (device tree model ``linux,dummy-virt``)."""
    x86 = any(v in cpu for v in ("Intel", "AMD", "GenuineIntel", "AuthenticAMD", "QEMU Virtual"))
    virt = "dummy-virt" in (model or "")
    return machine.startswith(("aarch64", "arm")) and (x86 or "qemu" in cpu.lower() or virt)


def board_info(interpreters: Dict[str, str]) -> Dict[str, Any]:
    """Machine, CPU, OS, Python, numpy and interpreter versions of the board."""
    machine = platform.machine()
    cpu = cpu_model()
    model = probe.device_model()
    return {
        "machine": machine,
        "model": model,
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_mb": mem_total_mb(),
        "os": os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "interpreters": interpreters,
        "looks_emulated": looks_emulated(machine, cpu, model),
    }


def mem_total_mb() -> Optional[float]:
    """MemTotal from /proc/meminfo (the board's RAM as its kernel sees it), MiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None
