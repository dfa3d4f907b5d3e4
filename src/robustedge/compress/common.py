"""What every pruning method shares: its inputs, memory ledger, optimizer and masked fine-tune.

A method is a function ``prune(ctx) -> PruneOutcome`` registered in ``PRUNERS``; it runs its
own pruning phase and returns masks. The pipeline (:mod:`robustedge.compress.pipeline`) then
runs the common masked fine-tune ("debias", paper 1; "retraining" in ADMM; "fine-tune" in
HYDRA) with the same robust objective.
"""

from __future__ import annotations

import logging
import math
import resource
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from robustedge.compress.config import CompressConfig
from robustedge.compress.targets import (
    MaskKeeper,
    Masks,
    apply_masks,
    optimizer_bytes,
    tensor_bytes,
)
from robustedge.registry import Registry
from robustedge.training.adversaries import TaskLoss, TrainingAdversary
from robustedge.training.loop import fit
from robustedge.training.loop import make_optimizer as optimizer_for

logger = logging.getLogger(__name__)
PRUNERS: Registry = Registry("pruning method")


class MemoryLedger:
    """Tensor bytes per training phase: parameters, gradients, optimizer and method state.

    Sampled once per phase after the first optimizer step (all state exists by then and
    stays the same size); ``peak`` is the phase with the largest total.
    """

    def __init__(self) -> None:
        self.phases: Dict[str, Dict[str, int]] = {}

    def sample(
        self,
        phase: str,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer],
        method_state: Sequence[torch.Tensor] = (),
    ) -> None:
        params = list(model.parameters())
        now = {
            "params": tensor_bytes(params),
            "grads": tensor_bytes(p.grad for p in params if p.grad is not None),
            "optimizer": optimizer_bytes(optimizer) if optimizer is not None else 0,
            "method_state": tensor_bytes(method_state),
        }
        now["total"] = sum(now.values())
        self.phases[phase] = now

    def report(self) -> Dict[str, object]:
        peak = max(self.phases.values(), key=lambda d: d["total"], default={"total": 0})
        return {
            "tensor_bytes": dict(peak),
            "phases": dict(self.phases),
            "rss_peak_bytes": peak_rss_bytes(),
        }


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass
class PruneContext:
    """Inputs of a pruning method; ``params`` are the prunable weights by name."""

    model: nn.Module
    cfg: CompressConfig
    batches: Callable[[int], Iterable]
    steps_per_epoch: int
    adversary: TrainingAdversary
    task_loss: TaskLoss
    params: Dict[str, nn.Parameter]
    input_shape: Tuple[int, int, int]
    device: torch.device = torch.device("cpu")
    ledger: MemoryLedger = field(default_factory=MemoryLedger)
    on_epoch_end: Optional[Callable[[int, Dict[str, float]], None]] = None
    history: List[Dict[str, float]] = field(default_factory=list)

    def fit(
        self,
        optimizer: torch.optim.Optimizer,
        epochs: int,
        phase: str,
        *,
        after_step: Optional[Callable[[nn.Module], None]] = None,
        task_loss: Optional[TaskLoss] = None,
        scheduler: Optional[object] = None,
        method_state: Callable[[], Sequence[torch.Tensor]] = tuple,
    ) -> None:
        """:func:`fit` with the context's data/adversary, memory sampling and history."""
        first = [True]

        def hook(model: nn.Module) -> None:
            if after_step is not None:
                after_step(model)
            if first[0]:
                self.ledger.sample(phase, model, optimizer, method_state())
                first[0] = False

        def epoch_end(epoch: int, record: Dict[str, float]) -> None:
            record = {"phase": phase, **record}
            self.history.append(record)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, record)

        fit(
            self.model,
            self.batches,
            self.adversary,
            optimizer,
            epochs,
            task_loss=task_loss or self.task_loss,
            scheduler=scheduler,
            after_step=hook,
            on_epoch_end=epoch_end,
            device=self.device,
        )


@dataclass
class PruneOutcome:
    """Masks over ``ctx.params`` (None for a physically shrunk model) and notes for metrics."""

    masks: Optional[Masks]
    finetune_epochs: int
    notes: Dict[str, object] = field(default_factory=dict)


def make_optimizer(
    params: Iterable[torch.Tensor], cfg: CompressConfig, lr: Optional[float] = None
) -> torch.optim.Optimizer:
    """The method's optimizer per ``cfg`` (``lr`` overrides ``cfg.lr``), no weight decay."""
    return optimizer_for(params, cfg.optimizer, cfg.lr if lr is None else lr)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def masked_finetune(ctx: PruneContext, masks: Optional[Masks], epochs: int) -> None:
    """Robust fine-tune of the surviving weights; masks are re-applied after every step and
    the gradients and optimizer moments of pruned weights are kept at zero."""
    if epochs <= 0:
        return
    optimizer = make_optimizer(ctx.model.parameters(), ctx.cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    keeper = None
    if masks:
        apply_masks(ctx.params, masks)
        keeper = MaskKeeper(ctx.params, masks, optimizer)
        keeper.attach()
    try:
        ctx.fit(
            optimizer,
            epochs,
            "finetune",
            after_step=keeper,
            scheduler=scheduler,
            method_state=lambda: list(masks.values()) if masks else [],
        )
    finally:
        if keeper is not None:
            keeper.detach()
