"""A plain training function with hooks (no do-everything Trainer class).

``after_step(model)`` runs after every ``optimizer.step()``: compression passes its proximal
operator or mask there. ``on_epoch_end(epoch, record)`` is where callers checkpoint.

Under torchrun (:mod:`robustedge.distributed`) every rank runs :func:`fit` on its shard of each
global batch; gradients are averaged before every step, and ``consistency()`` (the tensors that
must agree on every rank: weights, masks, method state) is checked after every step that
``after_step`` touched and at every epoch end. :func:`rng_state` / :func:`set_rng_state` capture
every random stream a run draws from, for bit-exact resume.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from robustedge import distributed
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


@dataclass
class FitHooks:
    """What :func:`fit` calls besides training: ``after_step(model)`` after every optimizer
    step (a prox operator, a mask), ``on_epoch_end(epoch, record)`` (checkpoints),
    ``consistency()`` (the tensors that must agree on every rank under torchrun; default: the
    parameters) and a progress bar when ``progress``."""

    after_step: Optional[Callable[[nn.Module], None]] = None
    on_epoch_end: Optional[Callable[[int, Dict[str, float]], None]] = None
    consistency: Optional[Callable[[], Sequence[torch.Tensor]]] = None
    progress: bool = False


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
    hooks: Optional[FitHooks] = None,
    device: torch.device = torch.device("cpu"),
) -> List[Dict[str, float]]:
    """Train ``model`` for epochs ``start_epoch .. epochs-1``; ``batches(epoch)`` yields (x, y)
    (this rank's share of each global batch under torchrun).

    Raises :class:`TrainingError` on a non-finite loss, before the step that would spread it,
    and, under torchrun, when the ranks' ``consistency()`` tensors (default: the parameters)
    stop agreeing.
    """
    hooks = hooks or FitHooks()
    loop = _Loop(model, adversary, optimizer, task_loss, hooks, device)
    history = []
    loop.check("initial weights")
    for epoch in range(start_epoch, epochs):
        it = batches(epoch)
        if hooks.progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        record = loop.epoch(epoch, it)
        if scheduler is not None:
            scheduler.step()
        logger.info("epoch %d: loss %.4f (%.1fs)", epoch + 1, record["loss"], record["seconds"])
        history.append(record)
        loop.check(f"weights at the end of epoch {epoch + 1}")
        if hooks.on_epoch_end is not None:
            hooks.on_epoch_end(epoch, record)
    return history


class _Loop:
    """One :func:`fit`'s steps: loss, backward, gradient averaging, step, hooks, checks."""

    def __init__(self, model, adversary, optimizer, task_loss, hooks: FitHooks, device) -> None:
        self.model, self.adversary, self.optimizer = model, adversary, optimizer
        self.task_loss, self.hooks, self.device = task_loss, hooks, device
        self.world = distributed.world()
        self.params = [p for g in optimizer.param_groups for p in g["params"]]

    def check(self, what: str) -> None:
        if self.world.parallel:
            get = self.hooks.consistency
            tensors = get() if get is not None else list(self.model.parameters())
            distributed.check_identical(tensors, what)

    def epoch(self, epoch: int, it: Iterable) -> Dict[str, float]:
        """Train one epoch over ``it``; the epoch's record (mean loss over every rank)."""
        self.model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        for x, y in it:
            x, y = x.to(self.device), y.to(self.device)
            total += self.step(epoch, x, y) * len(x)
            n += len(x)
        if self.world.parallel:
            distributed.average_buffers(self.model)
            total, n = distributed.all_sum([total, n], self.device)
        return {"epoch": epoch + 1, "loss": total / max(n, 1), "seconds": time.perf_counter() - t0}

    def step(self, epoch: int, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = self.adversary.loss(self.model, x, y, self.task_loss)
        if not math.isfinite(loss.item()):
            raise TrainingError(
                f"non-finite loss ({loss.item()}) at epoch {epoch + 1}; "
                "the last good checkpoint is kept (try a smaller learning rate)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.world.parallel:
            distributed.average_gradients(self.params)
        self.optimizer.step()
        if self.hooks.after_step is not None:
            self.hooks.after_step(self.model)
            self.check(f"weights or masks after a step of epoch {epoch + 1}")
        return loss.item()


def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
    """``batches(epoch)`` for :func:`fit`: a fresh shuffle every epoch, seeded by ``seed`` and
    the epoch alone (so resuming needs no sampler state). ``batch_size`` is the global batch:
    under torchrun each rank yields its ``batch_size / world`` share of it
    (:func:`robustedge.distributed.shard_indices`, torch's DistributedSampler)."""
    world = distributed.world()
    local = distributed.per_rank_batch(batch_size, world)

    def batches(epoch: int):
        perm = torch.as_tensor(distributed.shard_indices(len(x), seed, epoch, world))
        for i in range(0, len(perm), local):
            idx = perm[i : i + local]
            yield x[idx], y[idx]

    return batches


def rng_state(generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """Every random stream of this process (torch CPU/CUDA, numpy, python, and the adversary's
    ``generator``) as tensors and plain values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.as_tensor(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
        "generator": generator.get_state() if generator is not None else None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any], generator: Optional[torch.Generator] = None) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["gauss"],
        )
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
