"""What every pruning method shares: its inputs, memory ledger, optimizer and masked fine-tune.

A method is a function ``prune(ctx) -> PruneOutcome`` registered in ``PRUNERS`` with its own
options class (:func:`robustedge.compress.config.register_method`; ``ctx.cfg.options`` holds
them); it runs its own pruning phase and returns masks. The pipeline
(:mod:`robustedge.compress.pipeline`) then runs the common masked fine-tune ("debias", paper 1;
"retraining" in ADMM; "fine-tune" in HYDRA) with the same robust objective.

Resume: :meth:`PruneContext.fit` writes ``checkpoint`` at every epoch end (weights, optimizer,
scheduler, the method's tensors -- ADMM Z/U, HYDRA scores, masks -- and the scalars a method
registers with :meth:`PruneContext.keep_state`, the memory ledger, the history and every
random stream of every rank). Given ``resume`` (such a checkpoint), the phase it names picks up
where it stopped. Under torchrun the method tensors are checked identical on every rank after
every step and epoch.
"""

from __future__ import annotations

import logging
import math
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from robustedge import distributed
from robustedge.compress.config import (
    PRUNERS,  # noqa: F401  (re-exported: the registry)
    CompressConfig,
)
from robustedge.compress.ema import WeightEMA
from robustedge.compress.targets import (
    MaskKeeper,
    Masks,
    apply_masks,
    optimizer_bytes,
    tensor_bytes,
)
from robustedge.errors import CheckpointError
from robustedge.training.adversaries import TaskLoss, TrainingAdversary
from robustedge.training.loop import FitHooks, fit, set_rng_state
from robustedge.training.loop import make_optimizer as optimizer_for
from robustedge.training.run import save_checkpoint

logger = logging.getLogger(__name__)


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
    checkpoint: Optional[Path] = None  # written at every epoch end when set
    resume: Optional[Dict[str, Any]] = None  # a checkpoint to continue from
    config: Dict[str, Any] = field(default_factory=dict)  # the resolved config, checkpointed
    outcome: Optional[PruneOutcome] = None  # set once the pruning phase is over
    extra_state: Dict[str, Tuple[Callable[[], Any], Callable[[Any], None]]] = field(
        default_factory=dict
    )

    def keep_state(self, name: str, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        """Register a method's non-tensor state (plain values) for checkpoints: ``get()``
        returns it, ``put(value)`` restores it."""
        self.extra_state[name] = (get, put)

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
        epoch_hook: Optional[Callable[[Dict[str, float]], None]] = None,
    ) -> None:
        """:func:`fit` with the context's data/adversary, memory sampling, history,
        per-epoch checkpoints, resume and (under torchrun) rank-consistency checks.
        ``epoch_hook(record)``: the method's own end-of-epoch work (it may add to the epoch's
        history record), before ``on_epoch_end`` and the checkpoint."""
        first = [phase not in self.ledger.phases]
        world = distributed.world()

        def consistency() -> List[torch.Tensor]:
            return list(self.model.parameters()) + list(method_state())

        def hook(model: nn.Module) -> None:
            if after_step is not None:
                after_step(model)
            if first[0]:
                self.ledger.sample(phase, model, optimizer, method_state())
                first[0] = False

        def epoch_end(epoch: int, record: Dict[str, float]) -> None:
            record = {"phase": phase, **record}
            self.history.append(record)
            if epoch_hook is not None:
                epoch_hook(record)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, record)
            distributed.check_identical(consistency(), f"{phase} state after epoch {epoch + 1}")
            if self.checkpoint is not None:
                self.save(phase, epoch + 1, optimizer, scheduler, method_state, world)

        start = 0
        if self.resume is not None and self.resume.get("phase") == phase:
            start = self.restore(optimizer, scheduler, method_state, world)
        fit(
            self.model,
            self.batches,
            self.adversary,
            optimizer,
            epochs,
            start_epoch=start,
            task_loss=task_loss or self.task_loss,
            scheduler=scheduler,
            hooks=FitHooks(after_step=hook, on_epoch_end=epoch_end, consistency=consistency),
            device=self.device,
        )

    def save(self, phase, epoch, optimizer, scheduler, method_state, world) -> None:
        """Checkpoint after ``epoch`` epochs of ``phase`` (all ranks call; rank 0 writes)."""
        outcome = None
        if self.outcome is not None:
            o = self.outcome
            outcome = {"masks": o.masks, "finetune_epochs": o.finetune_epochs, "notes": o.notes}
        state = {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "phase": phase,
            "epoch": epoch,
            "method_state": [t.detach().clone() for t in method_state()],
            "extra_state": {n: get() for n, (get, _) in self.extra_state.items()},
            "ledger": dict(self.ledger.phases),
            "history": list(self.history),
            "outcome": outcome,
            "config": self.config,
        }
        save_checkpoint(self.checkpoint, world, state, self.adversary.generator)

    def restore(self, optimizer, scheduler, method_state, world) -> int:
        """Load ``self.resume`` into this phase; returns the epochs already done."""
        state, self.resume = self.resume, None
        try:
            self.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            tensors = list(method_state())
            if len(tensors) != len(state["method_state"]):
                raise ValueError("method state does not match")
            with torch.no_grad():
                for t, saved in zip(tensors, state["method_state"]):
                    t.copy_(saved)
            for name, (_, put) in self.extra_state.items():
                put(state["extra_state"][name])
            self.ledger.phases.update(state["ledger"])
            self.history[:] = state["history"]
            epoch = int(state["epoch"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"cannot resume from {self.checkpoint}: {e}") from None
        if state.get("rng"):
            set_rng_state(state["rng"][world.rank], self.adversary.generator)
        logger.info("resuming %s after epoch %d", state["phase"], epoch)
        return epoch


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
        distributed.check_identical(list(masks.values()), "masks")
        apply_masks(ctx.params, masks)
        keeper = MaskKeeper(ctx.params, masks, optimizer)
        keeper.attach()
    ema = WeightEMA(ctx.model, ctx.cfg.ema_decay) if ctx.cfg.ema_decay else None

    def after_step(model: nn.Module) -> None:
        if keeper is not None:
            keeper(model)
        if ema is not None:
            ema.update(model)

    try:
        ctx.fit(
            optimizer,
            epochs,
            "finetune",
            after_step=after_step,
            scheduler=scheduler,
            method_state=lambda: (list(masks.values()) if masks else [])
            + (ema.tensors() if ema else []),
        )
    finally:
        if keeper is not None:
            keeper.detach()
    if ema is not None:
        ema.copy_to(ctx.model)
