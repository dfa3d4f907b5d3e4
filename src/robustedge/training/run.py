"""`robustedge train` and `robustedge eval` as functions on run folders.

A run folder holds ``model.safetensors`` + ``model.json`` (weights and architecture),
``config.yaml`` (the resolved config), ``metrics.json`` and ``checkpoint/last.pt`` (model,
optimizer and epoch, loaded with ``weights_only=True``), written atomically every epoch.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from robustedge.attacks import AttackSpec
from robustedge.config import Optim, TrainConfig
from robustedge.data import Dataset, load_dataset
from robustedge.devices import resolve_device
from robustedge.errors import CheckpointError, RobustEdgeError
from robustedge.io import atomic_path, read_json, write_json, write_yaml
from robustedge.models import ModelSpec, build_model, count_params, load_model, save_model
from robustedge.models.checkpoint import safe_torch_load
from robustedge.training.adversaries import build_adversary
from robustedge.training.evaluate import default_spec, evaluate
from robustedge.training.loop import epoch_batches, fit

logger = logging.getLogger(__name__)
CKPT = Path("checkpoint") / "last.pt"


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random for one run (called by run functions, never at import)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer is Optim.SGD:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_run(cfg: TrainConfig, out: Path, resume: bool = False, progress: bool = False) -> Dict:
    """Train per ``cfg`` into run folder ``out``; returns the metrics written to metrics.json."""
    out = Path(out)
    _check_out_dir(out, resume)
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.data, cfg.data_dir)
    spec = ModelSpec(cfg.model, data.input_shape, data.num_classes, dict(cfg.model_kwargs))
    seed_everything(cfg.seed)
    model = build_model(spec).to(device)
    optimizer = make_optimizer(model.parameters(), cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    start, history = 0, []
    if resume and (out / CKPT).exists():
        start, history = _restore(out / CKPT, model, optimizer, scheduler, cfg)
    adversary = build_adversary(
        cfg.adversary, cfg.eps, cfg.steps, beta=cfg.trades_beta, **_manifold_kwargs(cfg, data)
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


def _manifold_kwargs(cfg: TrainConfig, data: Dataset) -> Dict[str, Any]:
    """Extra adversary arguments for on-manifold adversaries (only when --manifold is set)."""
    if cfg.manifold is None:
        return {}
    return {
        "manifold": cfg.manifold,
        "ratio": cfg.onmanifold_ratio,
        "eta": cfg.eta,
        "input_shape": data.input_shape,
        "num_classes": data.num_classes,
        "data_name": data.name,
        "data_dir": cfg.data_dir,
    }


def _train_eval_specs(cfg: TrainConfig) -> Sequence[AttackSpec]:
    eps = cfg.eps if cfg.eps > 0 else 0.1
    return [default_spec("fgsm", eps), default_spec("pgd", eps)]


def _check_out_dir(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RobustEdgeError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise RobustEdgeError(f"--out {out} is not empty (use --resume to continue that run)")


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


def load_run(run: Path):
    """(model, spec, config dict, dataset) of a finished run folder."""
    run = Path(run)
    model, spec = load_model(run)
    cfg = _read_config(run)
    data = load_dataset(cfg.get("data", "digits"), cfg.get("data_dir"))
    if data.input_shape != spec.input_shape or data.num_classes != spec.num_classes:
        raise CheckpointError(f"{run}: model input {spec.input_shape} does not match data")
    return model.eval(), spec, cfg, data


def _read_config(run: Path) -> Dict[str, Any]:
    import yaml

    path = run / "config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"missing {path}: is {run} a robustedge run folder?") from None
    except yaml.YAMLError as e:
        raise CheckpointError(f"corrupt {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"corrupt {path}: not a mapping")
    return cfg


def eval_run(
    run: Path, specs: Sequence[AttackSpec], seed: int = 0, data: Optional[Dataset] = None
) -> Dict:
    """Evaluate a run on its test split; writes RUN/eval.json atomically and returns it."""
    model, spec, cfg, loaded = load_run(run)
    data = data or loaded
    result = {
        "run": str(run),
        "data": data.name,
        "model": spec.name,
        "seed": seed,
        **evaluate(model, data.x_test, data.y_test, specs, seed=seed),
    }
    write_json(Path(run) / "eval.json", result)
    return result


def read_metrics(run: Path) -> Dict:
    return read_json(Path(run) / "metrics.json")
