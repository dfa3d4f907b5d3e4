"""The board benchmark's verdicts and tables (benchmarks/board.py): issue 11's targets judged
from a workload's measured models (met or missed, never asserted) and the printed tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402


def targets(name: str, m: Dict[str, Any]) -> Dict[str, Any]:
    """The issue's targets, reported (met or missed), never asserted."""
    t = m["teacher"]
    teacher_plain = t["sizes"]["tflite-int8"]["plain"]
    out: Dict[str, Any] = {}
    s95 = m.get("prox-s0.95")
    if s95:
        best = min(
            (v, f"{f} {c}") for f in s95["sizes"] for c, v in s95["sizes"][f].items() if c != "gzip"
        )
        out["flash_95_vs_teacher"] = {
            "target": "<= 0.2 of the dense int8 teacher's file",
            "student_flash_bytes": best[0],
            "student_storage": best[1],
            "teacher_int8_bytes": teacher_plain,
            "teacher_int8_xz_bytes": t["sizes"]["tflite-int8"]["xz"],
            "ratio": round(best[0] / teacher_plain, 3),
            "ratio_vs_teacher_xz": round(best[0] / t["sizes"]["tflite-int8"]["xz"], 3),
            "met": best[0] <= 0.2 * teacher_plain,
        }
    s4 = m.get("structured-4x")
    tp, sp = t["local"]["tflite-int8"]["p50_ms"], (s4 or {}).get("local", {}).get("tflite-int8")
    if s4 and sp and tp and sp["p50_ms"]:
        speedup = tp / sp["p50_ms"]
        both = s95 is not None and s95["pgd"] is not None and s4["pgd"] is not None
        gap = round(100 * (s95["pgd"] - s4["pgd"]), 2) if both else None
        out["structured_4x"] = {
            "target": "p50 >= 3x lower than the teacher's; PGD within 3 points of the 95 % student",
            "teacher_p50_ms": tp,
            "student_p50_ms": sp["p50_ms"],
            "speedup": round(speedup, 2),
            "pgd_points_below_95": gap,
            "met": speedup >= 3 and gap is not None and gap <= 3,
        }
    fb = m.get("flash-budget")
    if fb and fb.get("budget") and fb["local"].get("tflite-int8"):
        limit = fb["budget"]["limit"]
        board = fb["local"]["tflite-int8"]["flash_bytes"]
        out["flash_budget"] = {
            "target": "the student's stored file (xz bundle) fits its flash budget",
            "limit_kib": limit,
            "structure": fb["budget"].get("structure"),
            "measured_after_training_bytes": (fb["budget"].get("measured") or {}).get(
                "flash_bytes"
            ),
            "board_flash_bytes": board,
            "teacher_board_flash_bytes": t["local"]["tflite-int8"]["flash_bytes"],
            "met": board is not None and board <= limit * 1024,
        }
    lb = m.get("latency-budget")
    if lb and lb.get("budget") and lb["local"].get("tflite-int8"):
        limit = lb["budget"]["limit"]
        re = lb["local"]["tflite-int8"]["p50_ms"]
        out["latency_budget"] = {
            "target": "meets its latency budget on re-measurement (median p50 of the rounds)",
            "limit_ms": limit,
            "search_measured_ms": lb["budget"].get("student"),
            "remeasured_p50_ms": re,
            "met": re is not None and re <= limit,
        }
    return out


def print_tables(name: str, r: Dict[str, Any]) -> None:
    rows = []
    for key, m in r["models"].items():
        for f, loc in m["local"].items():
            rows.append(
                [
                    key,
                    f.replace("tflite-", ""),
                    m.get("macs"),
                    m["sizes"][f]["plain"],
                    loc["flash_bytes"],
                    m["sizes"][f]["gzip"],
                    loc["model_bytes"],
                    loc["peak_rss_mb"],
                    _us(loc["p50_ms"]),
                    _us(loc["p99_ms"]),
                    "-" if m["clean"] is None else f"{100 * m['clean']:.1f}",
                    "-" if m["pgd"] is None else f"{100 * m['pgd']:.1f}",
                ]
            )
    head = ["model", "format", "MACs", "plain B", "flash xz B", "gzip B", "model B"]
    head += ["RSS MiB", "p50 us", "p99 us", "clean %", "PGD %"]
    print(f"\n{name} (local, 1 thread, median of {len(r['rounds'])} interleaved rounds)")
    print(table(head, rows))
    for k, v in r["targets"].items():
        print(f"  {k}: {'MET' if v['met'] else 'MISSED'}  {json.dumps(v)}")
    if r["emulated_qemu_aarch64"].get("note"):
        print("  " + r["emulated_qemu_aarch64"]["note"])


def _us(ms: Optional[float]) -> str:
    return "-" if ms is None else f"{1000 * ms:.2f}"


def print_emulated(name: str, r: Dict[str, Any]) -> None:
    em = {k: v for k, v in r["emulated_qemu_aarch64"].items() if isinstance(v, dict)}
    rows = [
        [k, v["flash_bytes"], v["model_bytes"], v["peak_rss_mb"], v["p50_ms"], v["p99_ms"]]
        for k, v in em.items()
    ]
    print(f"\n{name} on qemu-aarch64 (EMULATED: not a board's latency), 1 thread")
    print(table(["model format", "flash B", "model B", "RSS MiB", "p50 ms", "p99 ms"], rows))
