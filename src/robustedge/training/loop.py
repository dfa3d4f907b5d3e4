"""A plain training function with hooks (no do-everything Trainer class).

``after_step(model)`` runs after every ``optimizer.step()``: compression passes its proximal
operator or mask there. ``on_epoch_end(epoch, record)`` is where callers checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn as nn

from robustedge.config import Optim
from robustedge.errors import TrainingError
from robustedge.training.adversaries import TaskLoss, TrainingAdversary, ce_task_loss

logger = logging.getLogger(__name__)


def make_optimizer(
    params: Iterable[torch.Tensor], kind: Optim, lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """The one optimizer factory: SGD (momentum 0.9) or Adam, with ``weight_decay``."""
    if Optim(kind) is Optim.SGD:
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def fit(
    model: nn.Module,
    batches: Callable[[int], Iterable],
    adversary: TrainingAdversary,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    start_epoch: int = 0,
    task_loss: TaskLoss = ce_task_loss,
    scheduler: Optional[object] = None,
    after_step: Optional[Callable[[nn.Module], None]] = None,
    on_epoch_end: Optional[Callable[[int, Dict[str, float]], None]] = None,
    device: torch.device = torch.device("cpu"),
    progress: bool = False,
) -> List[Dict[str, float]]:
    """Train ``model`` for epochs ``start_epoch .. epochs-1``; ``batches(epoch)`` yields (x, y).

    Raises :class:`TrainingError` on a non-finite loss, before the step that would spread it.
    """
    history = []
    for epoch in range(start_epoch, epochs):
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        it = batches(epoch)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for x, y in it:
            x, y = x.to(device), y.to(device)
            loss = adversary.loss(model, x, y, task_loss)
            if not math.isfinite(loss.item()):
                raise TrainingError(
                    f"non-finite loss ({loss.item()}) at epoch {epoch + 1}; "
                    "the last good checkpoint is kept (try a smaller learning rate)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(model)
            total += loss.item() * len(x)
            n += len(x)
        if scheduler is not None:
            scheduler.step()
        record = {
            "epoch": epoch + 1,
            "loss": total / max(n, 1),
            "seconds": time.perf_counter() - t0,
        }
        logger.info("epoch %d: loss %.4f (%.1fs)", epoch + 1, record["loss"], record["seconds"])
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    return history


def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
    """``batches(epoch)`` for :func:`fit`: a fresh, seeded shuffle every epoch (resumable)."""

    def batches(epoch: int):
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            yield x[idx], y[idx]

    return batches
