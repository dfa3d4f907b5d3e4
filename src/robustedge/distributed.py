"""Data parallelism on ``torchrun``: process group, sharding, gradient averaging, rank checks.

``torchrun --nproc-per-node N -m robustedge.cli train ...`` (or ``robustedge train --nproc N``)
starts N processes with ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in their environment; over
several machines (``--nnodes M``) torchrun also sets ``GROUP_RANK`` / ``GROUP_WORLD_SIZE``
(this node's rank, the number of nodes), and the ranks' host names are gathered once when
they join (:func:`node_record`: what results record about the nodes).
:func:`session` joins the process group (gloo on CPU, NCCL on CUDA, with a timeout so that a
dead rank ends the job instead of hanging it) and leaves it again; outside torchrun every
function here is a no-op for a world of one.

Each rank reads its shard of every global batch (:func:`shard_indices`, torch's
``DistributedSampler``), makes its own adversarial examples, and the gradients are averaged
over the ranks before every optimizer step (:func:`average_gradients`: one flat all-reduce,
the arithmetic of ``DistributedDataParallel`` without its module wrapper, which breaks the
input-gradient passes of attacks and HYDRA's parametrizations). All ranks therefore take the
same step; :func:`check_identical` verifies it (a checksum all-gather) after every prox / mask
step and raises :class:`~robustedge.errors.TrainingError` on divergence.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from robustedge.errors import RobustEdgeError, TrainingError

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 600.0  # a collective waiting longer than this ends the job
TIMEOUT_ENV = "ROBUSTEDGE_DIST_TIMEOUT"


@dataclass(frozen=True)
class World:
    """This process's place in the job (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    nodes: int = 1  # machines in the job (torchrun's GROUP_WORLD_SIZE)
    node_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def env_world() -> World:
    """The world torchrun describes in the environment (a world of one without torchrun)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
        node = int(os.environ.get("GROUP_RANK", "0"))
    except ValueError as e:
        raise RobustEdgeError(f"bad torchrun environment (RANK/WORLD_SIZE): {e}") from None
    if size < 1 or not 0 <= rank < size:
        raise RobustEdgeError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={size}")
    if not 1 <= nodes <= size or not 0 <= node < nodes:
        raise RobustEdgeError(
            f"bad torchrun environment: GROUP_RANK={node}, GROUP_WORLD_SIZE={nodes}"
        )
    return World(rank, size, local, nodes, node)


def world() -> World:
    """The current world: the process group's when one is joined, else one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        env = env_world()
        return World(
            dist.get_rank(), dist.get_world_size(), env.local_rank, env.nodes, env.node_rank
        )
    return World()


# (node rank, host name) of every rank, gathered when the ranks join (empty outside a session)
_hosts: List[Tuple[int, str]] = []


def node_record(w: Optional[World] = None) -> Dict[str, Any]:
    """What results record about the machines: the number of nodes and, over several, each
    node's host name (node rank order) and the ranks it ran."""
    w = w or world()
    if w.nodes == 1:
        return {"nodes": 1}
    hosts: Dict[int, str] = {}
    ranks: Dict[int, List[int]] = {}
    for rank, (node, host) in enumerate(_hosts):
        hosts.setdefault(node, host)
        ranks.setdefault(node, []).append(rank)
    table = [{"node": n, "host": hosts[n], "ranks": ranks[n]} for n in sorted(hosts)]
    return {"nodes": w.nodes, "node_hosts": table}


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(raw)
    except ValueError:
        raise RobustEdgeError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise RobustEdgeError(f"{TIMEOUT_ENV} must be > 0, got {raw!r}")
    return value


def rank_device(device: torch.device) -> torch.device:
    """On CUDA each rank uses its own GPU (``cuda:LOCAL_RANK``); CPU stays CPU."""
    if device.type == "cuda" and env_world().parallel:
        return torch.device("cuda", env_world().local_rank)
    return device


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[World]:
    """Join torchrun's process group for the block (gloo on CPU, NCCL on CUDA) and leave it
    afterwards; a world of one (no process group) outside torchrun."""
    import torch.distributed as dist

    env = env_world()
    if not env.parallel or (dist.is_available() and dist.is_initialized()):
        yield world()
        return
    if not dist.is_available():
        raise RobustEdgeError("this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise RobustEdgeError(
                f"rank {env.rank} needs GPU {env.local_rank} but {torch.cuda.device_count()} "
                "are visible: use at most one process per GPU (--nproc)"
            )
        torch.cuda.set_device(env.local_rank)
    # torch's first optimizer imports torch._dynamo; imported while a process group exists, it
    # keeps that group alive past destroy_process_group, and gloo's worker threads then race
    # the interpreter's exit ("terminate called without an active exception", SIGABRT).
    importlib.import_module("torch._dynamo")

    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
    logger.info(
        "rank %d of %d joined (%s, node %d of %d)", env.rank, env.size, backend,
        env.node_rank, env.nodes,
    )  # fmt: skip
    try:
        _hosts[:] = gather_objects((env.node_rank, socket.gethostname()))
        yield world()
    finally:
        _hosts.clear()
        dist.destroy_process_group()


def shard_indices(n: int, seed: int, epoch: int, w: Optional[World] = None) -> List[int]:
    """This rank's sample order for ``epoch``: torch's ``DistributedSampler`` (shuffled with
    ``seed * 100003 + epoch``, padded to a multiple of the world size, rank r takes every
    size-th index from r). With one process it is the plain seeded shuffle."""
    from torch.utils.data import DistributedSampler

    w = w or world()
    sampler = DistributedSampler(
        range(n), num_replicas=w.size, rank=w.rank, shuffle=True, seed=seed * 100003
    )
    sampler.set_epoch(epoch)
    return list(sampler)


def per_rank_batch(batch_size: int, w: Optional[World] = None) -> int:
    """The per-rank batch of a global batch ``batch_size`` (which must divide evenly)."""
    w = w or world()
    if batch_size % w.size:
        raise RobustEdgeError(
            f"the global batch size {batch_size} must be a multiple of the {w.size} processes"
        )
    return batch_size // w.size


def average_tensors(tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """The mean over the ranks of each tensor (one flat all-reduce; the tensors themselves in
    a world of one)."""
    import torch.distributed as dist

    w = world()
    if not w.parallel or not tensors:
        return list(tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= w.size
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replace every gradient by its mean over the ranks (one flat all-reduce; a missing
    gradient counts as zero)."""
    if not world().parallel or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for p, mean in zip(params, average_tensors(grads)):
        if p.grad is None:
            p.grad = mean.clone()
        else:
            p.grad.copy_(mean)


def all_sum(values: Sequence[float], device: torch.device = torch.device("cpu")) -> List[float]:
    """Sums of ``values`` over the ranks (the values themselves in a world of one)."""
    import torch.distributed as dist

    if not world().parallel:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks."""
    import torch.distributed as dist

    w = world()
    if not w.parallel:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= w.size


def checksum(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Three float64 numbers that change when any value, or the order of values, changes."""
    if not tensors:
        return torch.zeros(3, dtype=torch.float64)
    flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in tensors])
    ramp = torch.linspace(1.0, 2.0, len(flat), dtype=torch.float64)
    return torch.stack([flat.sum(), (flat * flat).sum(), (flat * ramp).sum()])


def check_identical(tensors: Sequence[torch.Tensor], what: str) -> None:
    """Raise :class:`TrainingError` on every rank unless ``tensors`` are the same on all ranks
    (checksums all-gathered; a no-op in a world of one)."""
    import torch.distributed as dist

    w = world()
    if not w.parallel:
        return
    mine = checksum(tensors)
    if dist.get_backend() == "nccl":
        mine = mine.cuda()
    gathered = [torch.empty_like(mine) for _ in range(w.size)]
    dist.all_gather(gathered, mine)
    for r, other in enumerate(gathered):
        if not torch.equal(other, gathered[0]):
            raise TrainingError(f"ranks diverged: {what} differ between rank 0 and rank {r}")


def agree(value: Any, what: str) -> None:
    """Raise :class:`TrainingError` on every rank unless every rank holds the same ``value``
    (a small picklable object; a no-op in a world of one). ``what`` names it in the error."""
    w = world()
    if not w.parallel:
        return
    values = gather_objects(value)
    for r, other in enumerate(values):
        if other != values[0]:
            raise TrainingError(
                f"ranks disagree on {what}: rank 0 has {values[0]!r}, rank {r} has {other!r}"
            )


def broadcast_tensors(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Copy ``tensors`` from rank ``src`` to every rank, in place."""
    import torch.distributed as dist

    if not world().parallel:
        return
    for t in tensors:
        dist.broadcast(t.data, src)


def gather_objects(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a world of one)."""
    import torch.distributed as dist

    w = world()
    if not w.parallel:
        return [obj]
    out: List[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    import torch.distributed as dist

    if world().parallel:
        dist.barrier()
