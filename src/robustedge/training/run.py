"""`robustedge train` and `robustedge eval` as functions on run folders.

A run folder (see :mod:`robustedge.runs`) holds ``model.safetensors`` + ``model.json``,
``config.yaml``, ``metrics.json`` and ``checkpoint/last.pt`` (model, optimizer and epoch,
loaded with ``weights_only=True``), written atomically every epoch.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

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
from robustedge.training.evaluate import EvalPlan, evaluate, evaluate_plan
from robustedge.training.loop import epoch_batches, fit, make_optimizer

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
) -> Dict:
    """Train per ``cfg`` into run folder ``out``; returns the metrics written to metrics.json.

    On-manifold adversaries need ``manifold``, the Manifold object of ``cfg.manifold``
    (``robustedge.manifold.load_manifold(cfg.manifold)``)."""
    out = Path(out)
    check_out_dir(out, resume)
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.data, cfg.data_dir)
    spec = ModelSpec(cfg.model, data.input_shape, data.num_classes, dict(cfg.model_kwargs))
    seed_everything(cfg.seed)
    model = build_model(spec).to(device)
    optimizer = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    start, history = 0, []
    if resume and (out / CKPT).exists():
        start, history = _restore(out / CKPT, model, optimizer, scheduler, cfg)
    adversary = build_adversary(
        cfg.adversary,
        cfg.eps,
        cfg.steps,
        beta=cfg.trades_beta,
        **_manifold_kwargs(cfg, data, manifold),
    )
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", cfg.to_dict())

    def checkpoint(epoch: int, record: Dict[str, float]) -> None:
        history.append(record)
        with atomic_path(out / CKPT) as tmp:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "config": cfg.to_dict(),
                },
                tmp,
            )

    xt, yt = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    fit(
        model,
        epoch_batches(xt, yt, cfg.batch_size, cfg.seed),
        adversary,
        optimizer,
        cfg.epochs,
        start_epoch=start,
        scheduler=scheduler,
        on_epoch_end=checkpoint,
        device=device,
        progress=progress,
    )
    model = model.cpu()
    save_model(out, model, spec)
    metrics = {
        "kind": "train",
        **adversary.describe(),
        "params": count_params(model),
        "history": history,
        **evaluate(model, data.x_test, data.y_test, _train_eval_specs(cfg), seed=cfg.seed),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


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
    eps = eps_or_default(cfg.eps)
    return [AttackSpec.default("fgsm", eps), AttackSpec.default("pgd", eps)]


def _restore(path: Path, model, optimizer, scheduler, cfg: TrainConfig):
    state = safe_torch_load(path)
    if state.get("config") != cfg.to_dict():
        raise CheckpointError(f"{path} was written with a different config; start a new --out")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"cannot resume from {path}: {e}") from None
    logger.info("resuming at epoch %d", state["epoch"] + 1)
    return int(state["epoch"]), list(state.get("history", []))


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
