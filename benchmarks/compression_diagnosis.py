"""Diagnosis runs: why ADMM beat paper 1's prox+KD+AT at high sparsity (issue 12).

The trade-off benchmark (``benchmarks/tradeoff.py``: same teacher, PGD-5 training, eps 0.1,
``--epochs`` + ``--finetune-epochs``, the white-box suite, mean and std over seeds, runs
cached by configuration) with named variants: CompressConfig overrides on top of the shared
setting, from ``VARIANTS`` (the trade-off methods plus the diagnosis's own) or defined on the
command line as ``name=key:value,key:value`` (overrides of CompressConfig's current defaults).
Rows also record the per-layer sparsity each run ends with. Writes
``benchmarks/results/<name>.json`` (copy it to ``benchmarks/measured/`` to keep it).

    .venv/bin/python benchmarks/compression_diagnosis.py --teacher RUN \
        --variants prox admm prox-noKD --sparsities 0.95 --seeds 0 1 2
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tradeoff  # noqa: E402
from tradeoff import PAPER1  # noqa: E402

# the diagnosis's own variants (docs/compression-diagnosis.md); "prox" is paper 1's setting
VARIANTS = {
    "prox-noKD-l0": {"method": "prox", **PAPER1, "kd_alpha": 0.0, "penalty": "l0"},
    "prox-noKD-layer": {"method": "prox", **PAPER1, "kd_alpha": 0.0, "scope": "layer"},
    "admm-layer": {"method": "admm", "scope": "layer"},
    "gmp-layer": {"method": "gmp", "scope": "layer"},
    "prox-lazy-l0-clean-T1": {"method": "prox"},  # = the default since the diagnosis
}


def _cast(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def add_variant(spec: str) -> str:
    """``name=key:value,key:value`` defines a variant on the command line."""
    name, _, rest = spec.partition("=")
    if rest:
        kw = {}
        for item in rest.split(","):
            k, _, v = item.partition(":")
            kw[k] = _cast(v)
        tradeoff.METHODS[name] = kw
    if name not in tradeoff.METHODS:
        raise SystemExit(f"unknown variant '{name}' (known: {', '.join(tradeoff.METHODS)})")
    return name


def main() -> None:
    tradeoff.METHODS.update(VARIANTS)
    ap = tradeoff.parser(__doc__.splitlines()[0])
    ap.set_defaults(sparsities=[0.95], seeds=[0])
    ap.add_argument("--variants", nargs="+", default=["prox", "admm"])
    ap.add_argument("--name", default="compression_diagnosis")
    args = ap.parse_args()
    if not args.teacher:
        raise SystemExit("--teacher RUN is required")
    args.methods = [add_variant(v) for v in args.variants]
    tradeoff.run(args, args.name)


if __name__ == "__main__":
    main()
