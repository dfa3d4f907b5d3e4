"""Everything an export reads from a run folder, loaded once and checked."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

import numpy as np

from robustedge.errors import RobustEdgeError

if TYPE_CHECKING:  # torch loads only when an export runs
    import torch

    from robustedge.data import Dataset
    from robustedge.models import ModelSpec

logger = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Model (eval mode, CPU), its spec and model.json, config.yaml, data, transfer eps."""

    run_dir: Path
    model: torch.nn.Module
    spec: ModelSpec
    meta: Dict[str, Any]
    cfg: Dict[str, Any]
    data: Dataset
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
    from robustedge.attacks import eps_or_default
    from robustedge.runs import load_run

    if not run_dir.is_dir():
        raise RobustEdgeError(f"run folder not found: {run_dir}")
    run = load_run(run_dir, model)
    eps = eps_or_default(float(run.config.get("eps") or 0.0))
    return RunContext(run_dir, run.model, run.spec, run.meta, run.config, run.data, eps)
