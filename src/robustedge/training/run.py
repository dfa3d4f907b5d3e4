"""`robustedge train` and `robustedge eval` as functions on run folders.

A run folder (see :mod:`robustedge.runs`) holds ``model.safetensors`` + ``model.json``,
``config.yaml``, ``metrics.json`` and ``checkpoint/last.pt`` (model, optimizer, scheduler,
epoch and every random stream of every rank, loaded with ``weights_only=True``), written
atomically every epoch: a resumed run equals an uninterrupted one bit for bit (one thread).
Under torchrun only rank 0 writes; the results record the world size and the global batch.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from robustedge import distributed
from robustedge.attacks import AttackSpec, eps_or_default
from robustedge.data import Dataset, load_dataset
from robustedge.devices import resolve_device
from robustedge.errors import CheckpointError
from robustedge.io import atomic_path, write_json, write_yaml
from robustedge.models import ModelSpec, build_model, count_params, save_model
from robustedge.models.checkpoint import safe_torch_load
from robustedge.runs import check_out_dir, load_run
from robustedge.training.adversaries import build_adversary
from robustedge.training.config import TrainConfig
from robustedge.training.evaluate import EvalPlan, evaluate, evaluate_plan, suites_at
from robustedge.training.loop import (
    FitHooks,
    epoch_batches,
    fit,
    make_optimizer,
    rng_state,
    set_rng_state,
)
from robustedge.training.tensors import as_images

logger = logging.getLogger(__name__)
CKPT = Path("checkpoint") / "last.pt"


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random for one run (called by run functions, never at import)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_run(
    cfg: TrainConfig,
    out: Path,
    resume: bool = False,
    progress: bool = False,
    manifold: Any = None,
    suite: Optional[str] = None,
) -> Dict:
    """Train per ``cfg`` into run folder ``out``; returns the metrics written to metrics.json.

    On-manifold adversaries need ``manifold``, the Manifold object of ``cfg.manifold``
    (``robustedge.manifold.load_manifold(cfg.manifold)``). ``suite``: also evaluate the final
    model under the worst case per image of that attack suite (``metrics["suites"]``)."""
    out = Path(out)
    suites = suites_at(suite, [eps_or_default(cfg.eps)])  # an unknown name fails here
    device = distributed.rank_device(resolve_device(cfg.device))
    with distributed.session(device) as world:
        return _train(cfg, out, resume, progress, manifold, device, world, suites)


def _train(cfg, out, resume, progress, manifold, device, world, suites=()) -> Dict:
    check_out_dir(out, resume)
    distributed.per_rank_batch(cfg.batch_size, world)
    data = load_dataset(cfg.data, cfg.data_dir)
    job = _TrainJob(cfg, data, manifold, device, world)
    start, rng = 0, None
    if resume and (out / CKPT).exists():
        start, job.history, rng = restore_checkpoint(
            out / CKPT, cfg.to_dict(), world, job.model, job.optimizer, job.scheduler
        )
    if resume:  # every node must see the run folder (a shared filesystem, or a copy)
        distributed.agree(start, f"the epoch to resume {out} from")
    distributed.barrier()  # every rank has checked and read --out before rank 0 writes
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        write_yaml(out / "config.yaml", cfg.to_dict())
    if rng is not None:
        set_rng_state(rng, job.adversary.generator)
    xt, yt = as_images(data.x_train), torch.as_tensor(data.y_train)
    fit(
        job.model,
        epoch_batches(xt, yt, cfg.batch_size, cfg.seed),
        job.adversary,
        job.optimizer,
        cfg.epochs,
        start_epoch=start,
        scheduler=job.scheduler,
        hooks=FitHooks(
            on_epoch_end=lambda epoch, record: job.checkpoint(out / CKPT, epoch, record),
            progress=progress and world.main,
        ),
        device=device,
    )
    return job.finish(out, data, suites)


class _TrainJob:
    """One training run's model, optimizer, scheduler, adversary and history."""

    def __init__(self, cfg: TrainConfig, data: Dataset, manifold: Any, device, world) -> None:
        self.cfg, self.world = cfg, world
        self.spec = ModelSpec(cfg.model, data.input_shape, data.num_classes, dict(cfg.model_kwargs))
        seed_everything(cfg.seed)
        self.model = build_model(self.spec).to(device)
        self.optimizer = make_optimizer(
            self.model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, cfg.epochs)
        self.adversary = build_adversary(
            cfg.adversary,
            cfg.eps,
            cfg.steps,
            beta=cfg.trades_beta,
            **_manifold_kwargs(cfg, data, manifold),
        )
        self.adversary.seed(cfg.seed, world.rank)
        self.history: List[Dict[str, Any]] = []

    def checkpoint(self, path: Path, epoch: int, record: Dict[str, float]) -> None:
        """Every epoch end: the history grows and the checkpoint is written (rank 0)."""
        self.history.append(record)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch + 1,
            "history": self.history,
            "config": self.cfg.to_dict(),
        }
        save_checkpoint(path, self.world, state, self.adversary.generator)

    def finish(self, out: Path, data: Dataset, suites: Sequence[Any]) -> Dict[str, Any]:
        """Save the model and write metrics.json (rank 0); other ranks return their record."""
        cfg = self.cfg
        scale = scale_record(cfg.batch_size, self.world)
        if not self.world.main:
            return {"kind": "train", "rank": self.world.rank, **scale, "history": self.history}
        model = self.model.cpu()
        save_model(out, model, self.spec)
        specs = _train_eval_specs(cfg)
        metrics = {
            "kind": "train",
            **self.adversary.describe(),
            **scale,
            "params": count_params(model),
            "history": self.history,
            **evaluate(model, data.x_test, data.y_test, specs, seed=cfg.seed, suites=suites),
        }
        write_json(out / "metrics.json", metrics)
        return metrics


def scale_record(batch_size: int, world: distributed.World) -> Dict[str, Any]:
    """What results record about data parallelism: processes, the global batch, the nodes."""
    return {
        "world_size": world.size,
        "global_batch_size": batch_size,
        "batch_per_rank": batch_size // world.size,
        **distributed.node_record(world),
    }


def save_checkpoint(
    path: Path, world: distributed.World, state: Dict[str, Any], generator: torch.Generator
) -> None:
    """Rank 0 writes ``state`` + every rank's random streams (a collective: all ranks call)."""
    rngs = distributed.gather_objects(rng_state(generator))
    if not world.main:
        return
    with atomic_path(path) as tmp:
        torch.save({**state, "rng": rngs, "world_size": world.size}, tmp)


def restore_checkpoint(
    path: Path, config: Dict[str, Any], world: distributed.World, model, optimizer, scheduler
):
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` / ``optimizer`` /
    ``scheduler``; returns (epochs done, history, this rank's random streams or None)."""
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("config") != config:
        raise CheckpointError(f"{path} was written with a different config; start a new --out")
    size = state.get("world_size", 1)
    if state.get("rng") is not None and size != world.size:
        raise CheckpointError(
            f"{path} was written by {size} process(es); resume it with --nproc {size} "
            "(over several machines: --nnodes x --nproc processes in all)"
        )
    try:
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        epoch = int(state["epoch"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot resume from {path}: {e}") from None
    logger.info("resuming at epoch %d", epoch + 1)
    rngs = state.get("rng")
    return epoch, list(state.get("history", [])), rngs[world.rank] if rngs else None


def _manifold_kwargs(cfg: TrainConfig, data: Dataset, manifold: Any) -> Dict[str, Any]:
    """Extra adversary arguments for on-manifold adversaries (only when --manifold is set)."""
    if cfg.manifold is None:
        return {}
    return {
        "manifold": manifold,
        "source": cfg.manifold,
        "ratio": cfg.onmanifold_ratio,
        "eta": cfg.eta,
        "input_shape": data.input_shape,
        "num_classes": data.num_classes,
        "data_name": data.name,
    }


def _train_eval_specs(cfg: TrainConfig) -> Sequence[AttackSpec]:
    """The final model's evaluation: the default :class:`EvalPlan` at the run's eps."""
    return EvalPlan(eps=(eps_or_default(cfg.eps),)).specs()


def eval_run(
    run: Path,
    plan: Union[EvalPlan, Sequence[AttackSpec]],
    seed: int = 0,
    data: Optional[Dataset] = None,
    resources: Optional[Dict[str, Any]] = None,
) -> Dict:
    """Evaluate a run on its test split per ``plan`` (an :class:`EvalPlan`, or attack specs):
    clean, attacks and, when planned, corruptions. Writes RUN/eval.json atomically and
    returns it. ``resources`` holds what some attacks need (``manifold``: a Manifold)."""
    loaded = load_run(run, data=data)
    d = loaded.data
    if not isinstance(plan, EvalPlan):
        result = evaluate(loaded.model, d.x_test, d.y_test, list(plan), seed, resources)
    else:
        result = evaluate_plan(loaded.model, d.x_test, d.y_test, plan, seed, resources)
    result = {"run": str(run), "data": d.name, "model": loaded.spec.name, "seed": seed, **result}
    write_json(Path(run) / "eval.json", result)
    return result
