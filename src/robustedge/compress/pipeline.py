"""`robustedge compress` as a function: teacher run folder in, student run folder out.

Order: validate everything (config, teacher run, data, shapes) before any file is written;
build the student (the teacher's weights when the architecture is the same); run the chosen
method's pruning phase and the common robust masked fine-tune; evaluate; then write the whole
run folder through a staging folder that replaces ``out`` only on success. Every epoch end
writes ``out/checkpoint/last.pt`` (see :mod:`robustedge.compress.common`); ``resume=True``
continues from it, bit for bit (one thread). On a non-finite loss the last good checkpoint stays
and a TrainingError explains it. Under torchrun only rank 0 writes; metrics record the world
size and the global batch size.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn as nn

from robustedge import distributed
from robustedge.attacks import AttackSpec, eps_or_default
from robustedge.compress.common import (
    PRUNERS,
    PruneContext,
    PruneOutcome,
    masked_finetune,
    steps_per_epoch,
)
from robustedge.compress.config import CompressConfig
from robustedge.compress.distill import RememberClean, make_kd_task_loss
from robustedge.compress.targets import (
    count_nonzero,
    prunable_params,
    require_prunable,
    sparsity_report,
)
from robustedge.config import default_of
from robustedge.data import Dataset
from robustedge.devices import resolve_device
from robustedge.errors import CheckpointError, RobustEdgeError, TrainingError
from robustedge.io import atomic_path, staging_dir, write_json, write_yaml
from robustedge.models import ModelSpec, build_model, count_macs, count_params, save_model
from robustedge.models.checkpoint import safe_torch_load
from robustedge.runs import check_out_dir, load_run, read_config, run_data
from robustedge.training.adversaries import build_adversary
from robustedge.training.awp import AWP
from robustedge.training.evaluate import EvalPlan, evaluate, suites_at
from robustedge.training.loop import epoch_batches
from robustedge.training.run import scale_record, seed_everything
from robustedge.training.tensors import as_images

logger = logging.getLogger(__name__)
MASKS = "masks.safetensors"
CKPT = Path("checkpoint") / "last.pt"


def load_teacher(cfg: CompressConfig):
    """(teacher model, spec, teacher config dict, data set) with every check done."""
    run = Path(cfg.teacher)
    if not run.is_dir():
        raise CheckpointError(f"teacher run not found: {run}")
    data = run_data(read_config(run), cfg.data, cfg.data_dir)
    teacher = load_run(run, data=data)
    return teacher.model, teacher.spec, teacher.config, data


def make_adversary(cfg: CompressConfig, data: Dataset):
    """The training adversary; ``--adversary-opt`` pairs pass straight through. With a
    ``manifold`` option the data set's shape/name are added (as `train` does)."""
    opts: Dict[str, Any] = {"beta": cfg.trades_beta, **cfg.adversary_opts}
    if "manifold" in opts:
        from robustedge.manifold import load_manifold

        opts = {
            "input_shape": data.input_shape,
            "num_classes": data.num_classes,
            "data_name": data.name,
            **opts,
            "source": str(opts["manifold"]),
            "manifold": load_manifold(opts["manifold"], data_dir=cfg.data_dir),
        }
    try:
        adversary = build_adversary(cfg.adversary, cfg.eps, cfg.steps, **opts)
    except TypeError as e:
        raise RobustEdgeError(f"bad options for adversary '{cfg.adversary}': {e}") from None
    return AWP(adversary, cfg.awp_gamma) if cfg.awp_gamma > 0 else adversary


def build_student(
    cfg: CompressConfig, teacher: nn.Module, t_spec: ModelSpec, data: Dataset
) -> tuple:
    """Student spec and model: the teacher's copy, or ``cfg.model`` built from scratch."""
    if cfg.model is None or (cfg.model == t_spec.name and not cfg.model_kwargs):
        return t_spec, copy.deepcopy(teacher)
    spec = ModelSpec(cfg.model, data.input_shape, data.num_classes, dict(cfg.model_kwargs))
    return spec, build_model(spec)


def compress_run(
    cfg: CompressConfig,
    out: Path,
    eval_attacks: Optional[Sequence[Union[str, AttackSpec]]] = None,
    resume: bool = False,
    eval_suite: Optional[str] = None,
) -> Dict[str, Any]:
    """Compress ``cfg.teacher`` into a student run folder ``out``; returns its metrics.
    ``resume``: continue from ``out/checkpoint/last.pt`` (a fresh start when it is absent).
    ``eval_suite``: also evaluate the student under the worst case per image of that attack
    suite (``metrics["suites"]``)."""
    out = Path(out)
    suites = suites_at(eval_suite, [eps_or_default(cfg.eps)])  # an unknown name fails here
    device = distributed.rank_device(resolve_device(cfg.device))
    with distributed.session(device) as world:
        return _compress(cfg, out, eval_attacks, resume, device, world, suites)


def _compress(cfg, out, eval_attacks, resume, device, world, suites=()) -> Dict[str, Any]:
    check_out_dir(out, resume)
    distributed.per_rank_batch(cfg.batch_size, world)
    teacher, t_spec, t_cfg, data = load_teacher(cfg)
    adversary = make_adversary(cfg, data)
    adversary.seed(cfg.seed, world.rank)
    eps = eps_or_default(cfg.eps)
    if eval_attacks is None:  # the evaluation default of every run (EvalPlan's attacks)
        eval_attacks = default_of(EvalPlan, "attacks")
    specs = [a if isinstance(a, AttackSpec) else AttackSpec.default(a, eps) for a in eval_attacks]
    seed_everything(cfg.seed)
    spec, student = build_student(cfg, teacher, t_spec, data)
    require_prunable(student, cfg.include_first, cfg.include_last, f"model '{spec.name}'")
    teacher, student = teacher.to(device), student.to(device).train()
    resolved = {
        **cfg.to_dict(),
        "data": data.name,
        "data_dir": cfg.data_dir or (None if cfg.data else t_cfg.get("data_dir")),
        "model": spec.name,
        "model_kwargs": dict(spec.kwargs),
    }
    state = _read_checkpoint(out / CKPT, resolved, world) if resume else None
    distributed.barrier()  # every rank has checked and read --out before rank 0 writes

    ctx = make_context(cfg, student, teacher, adversary, data, device)
    ctx.checkpoint, ctx.config, ctx.resume = out / CKPT, resolved, state
    t0 = time.perf_counter()
    outcome = _train(ctx, out, state)
    student = ctx.model.cpu().eval()
    if not world.main:
        return {"kind": "compress", "rank": world.rank, **scale_record(cfg.batch_size, world)}
    metrics = _metrics(cfg, ctx, outcome, student, teacher.cpu(), data, specs, adversary, suites)
    metrics.update(scale_record(cfg.batch_size, world))
    metrics["seconds"] = time.perf_counter() - t0
    _write_run(out, student, spec, outcome, ctx, metrics, resolved)
    return metrics


def _read_checkpoint(path: Path, resolved: Dict[str, Any], world) -> Optional[Dict[str, Any]]:
    """The checkpoint to resume from, checked against this run (None: start afresh)."""
    if not path.exists():
        return None
    state = safe_torch_load(path)
    if not isinstance(state, dict) or not same_config(state.get("config"), resolved):
        raise CheckpointError(f"{path} was written with a different config; start a new --out")
    if state.get("phase") in (None, "start") or "rng" not in state:
        return None  # written before the first epoch ended: nothing to continue
    if state.get("world_size", 1) != world.size:
        raise CheckpointError(
            f"{path} was written by {state.get('world_size')} process(es); "
            f"resume it with --nproc {state.get('world_size')}"
        )
    return state


def same_config(saved: Any, resolved: Dict[str, Any]) -> bool:
    """True when a checkpoint's config (a flat mapping) is the run's ``resolved`` one; a
    mapping written before the methods' options were split (every method's keys, the others
    at their defaults) is compared in today's form."""
    if saved == resolved:
        return True
    try:
        return CompressConfig.from_dict(saved).to_dict() == resolved
    except (TypeError, ValueError, KeyError):
        return False


def make_context(cfg, student, teacher, adversary, data, device) -> PruneContext:
    """The :class:`PruneContext` of a compression run (this rank's data shard under torchrun)."""
    xt, yt = as_images(data.x_train), torch.as_tensor(data.y_train)
    size = distributed.world().size
    task_loss = make_kd_task_loss(teacher, cfg.kd_alpha, cfg.kd_temp)
    if cfg.kd_target != "adv" and cfg.kd_alpha > 0:
        # the teacher answers on the clean batch, in the pruning phase and in the fine-tune
        # (also when a resumed run starts in the fine-tune)
        task_loss.target = cfg.kd_target.value
        adversary = RememberClean(adversary, task_loss)
    return PruneContext(
        model=student,
        cfg=cfg,
        batches=epoch_batches(xt, yt, cfg.batch_size, cfg.seed),
        steps_per_epoch=steps_per_epoch(-(-len(xt) // size), cfg.batch_size // size),
        adversary=adversary,
        task_loss=task_loss,
        params=prunable_params(student, cfg.include_first, cfg.include_last),
        input_shape=data.input_shape,
        device=device,
    )


def _train(ctx: PruneContext, out: Path, state: Optional[Dict[str, Any]]) -> PruneOutcome:
    """Pruning phase + fine-tune (the pruning phase is skipped when resuming in the
    fine-tune); on a non-finite loss, keep the last good checkpoint and re-raise."""
    last_good = {"epoch": 0, "phase": "start"}

    def keep(epoch: int, record: Dict[str, Any]) -> None:
        last_good.update(epoch=epoch + 1, phase=record["phase"])

    ctx.on_epoch_end = keep
    start_state = _cpu_state(ctx.model)
    try:
        if state is not None and state["phase"] == "finetune":
            outcome = _resumed_outcome(ctx, state)
        else:
            outcome = PRUNERS.get(ctx.cfg.method).prune(ctx)
        ctx.outcome = outcome
        masked_finetune(ctx, outcome.masks, outcome.finetune_epochs)
    except TrainingError as e:
        path = out / CKPT
        if last_good["phase"] == "start" and distributed.world().main:
            with atomic_path(path) as tmp:
                torch.save(
                    {"model": start_state, "epoch": 0, "phase": "start", "config": ctx.config},
                    tmp,
                )
        raise TrainingError(
            f"{e}; last good student state ({last_good['phase']} epoch "
            f"{last_good['epoch']}) saved to {path}"
        ) from None
    return outcome


def _resumed_outcome(ctx: PruneContext, state: Dict[str, Any]) -> PruneOutcome:
    """The pruning phase's outcome read back from a fine-tune checkpoint (a structured
    student is shrunk again with the saved channel masks)."""
    saved = state.get("outcome") or {}
    try:
        notes = dict(saved["notes"])
        outcome = PruneOutcome(saved["masks"], int(saved["finetune_epochs"]), notes)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot resume the fine-tune: bad outcome ({e})") from None
    if outcome.masks is None and notes.get("channel_masks"):
        from robustedge.compress.structured import channel_groups, remove_channels

        cfg = ctx.cfg
        groups = channel_groups(ctx.model, ctx.input_shape, cfg.include_first, cfg.include_last)
        remove_channels(ctx.model, ctx.input_shape, groups, notes["channel_masks"])
    ctx.params.clear()
    ctx.params.update(prunable_params(ctx.model, ctx.cfg.include_first, ctx.cfg.include_last))
    return outcome


def _cpu_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _metrics(cfg, ctx, outcome, student, teacher, data, specs, adversary, suites) -> Dict[str, Any]:
    params = prunable_params(student, cfg.include_first, cfg.include_last)
    rep = sparsity_report(params)
    notes = {k: v for k, v in outcome.notes.items() if k != "channel_masks"}
    return {
        "kind": "compress",
        "method": cfg.method,
        "structured": cfg.structured,
        "target_sparsity": cfg.sparsity,
        "scope": cfg.scope.value,
        **adversary.describe(),
        "kd_alpha": cfg.kd_alpha,
        "kd_temp": cfg.kd_temp,
        "sparsity": rep,
        "params": count_params(student),
        "nonzero_params": count_nonzero(student),
        "macs": count_macs(student, data.input_shape),
        "teacher": {
            "run": str(cfg.teacher),
            "params": count_params(teacher),
            "macs": count_macs(teacher, data.input_shape)["dense"],
        },
        "memory": ctx.ledger.report(),
        "notes": notes,
        "history": ctx.history,
        **evaluate(student, data.x_test, data.y_test, specs, seed=cfg.seed, suites=suites),
    }


def _write_run(
    out: Path,
    student: nn.Module,
    spec: ModelSpec,
    outcome: PruneOutcome,
    ctx: PruneContext,
    metrics: Dict[str, Any],
    resolved: Dict[str, Any],
) -> None:
    from safetensors.torch import save_file

    structure = "shrunk" if ctx.cfg.structured else ("masked" if outcome.masks else "dense")
    masks = outcome.masks or outcome.notes.get("channel_masks") or {}
    sparsity = {
        "global": metrics["sparsity"]["global"],
        "layers": {n: v["sparsity"] for n, v in metrics["sparsity"]["layers"].items()},
    }
    with staging_dir(out) as tmp:
        save_model(
            tmp,
            student,
            spec,
            extra={
                "masks": MASKS,
                "structure": structure,
                "sparsity": sparsity,
                "teacher": ctx.cfg.teacher,
            },
        )
        save_file(
            {n: m.to(torch.uint8).contiguous().cpu() for n, m in masks.items()}, str(tmp / MASKS)
        )
        write_yaml(tmp / "config.yaml", resolved)
        write_json(tmp / "metrics.json", metrics)


def read_masks(run: Path) -> Optional[Dict[str, torch.Tensor]]:
    """Masks of a student run (bool tensors), or None if it has none."""
    from safetensors.torch import load_file

    path = Path(run) / MASKS
    if not path.is_file():
        return None
    return {k: v.bool() for k, v in load_file(str(path)).items()}
