"""Everything an export reads from a run folder, loaded once and checked."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from robustedge.errors import RobustEdgeError
from robustedge.export.evalsets import DEFAULT_EPS

logger = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Model (eval mode, CPU), its spec and model.json, config.yaml, data, transfer eps."""

    run_dir: Path
    model: Any
    spec: Any
    meta: Dict[str, Any]
    cfg: Dict[str, Any]
    data: Any
    eps: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        """PyTorch logits of an NCHW float32 batch."""
        import torch

        with torch.no_grad():
            xt = torch.as_tensor(x)
            return torch.cat([self.model(xt[i : i + 512]) for i in range(0, len(xt), 512)]).numpy()

    def teacher_dir(self) -> Optional[Path]:
        """``teacher`` in model.json or config.yaml (relative paths: against the run folder)."""
        t = self.meta.get("teacher") or self.cfg.get("teacher")
        if not t:
            return None
        p = Path(t)
        return p if p.is_absolute() or p.exists() else self.run_dir / p


def load_context(run_dir: Path, model: Any = None) -> RunContext:
    """Load a run folder (weights checked against the architecture) for export."""
    from robustedge.data import load_dataset
    from robustedge.models import load_model, load_spec
    from robustedge.training.run import _read_config

    if not run_dir.is_dir():
        raise RobustEdgeError(f"run folder not found: {run_dir}")
    spec, meta = load_spec(run_dir)
    model, spec = load_model(run_dir, model)
    model = model.cpu().eval()
    cfg = _read_config(run_dir)
    data = load_dataset(cfg.get("data", "digits"), cfg.get("data_dir"))
    if data.input_shape != spec.input_shape or data.num_classes != spec.num_classes:
        raise RobustEdgeError(
            f"{run_dir}: model input {spec.input_shape} / "
            f"{spec.num_classes} classes do not match data set {data.name}"
        )
    eps = float(cfg.get("eps") or 0.0)
    eps = eps if eps > 0 else DEFAULT_EPS
    return RunContext(run_dir, model, spec, meta, cfg, data, eps)
