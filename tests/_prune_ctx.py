"""A pruning method's context built by hand: the pipeline's pieces without the pipeline."""

from __future__ import annotations

import torch


def prune_ctx(teacher, cfg):
    """The PruneContext of a pruning phase on ``teacher``'s student (no pipeline around it)."""
    from robustedge.compress import PruneContext, make_kd_task_loss
    from robustedge.compress.common import steps_per_epoch
    from robustedge.compress.pipeline import build_student, load_teacher, make_adversary
    from robustedge.compress.targets import prunable_params
    from robustedge.training import epoch_batches

    t, t_spec, _, data = load_teacher(cfg)
    _, student = build_student(cfg, t, t_spec, data)
    xt, yt = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    return PruneContext(
        model=student,
        cfg=cfg,
        batches=epoch_batches(xt, yt, cfg.batch_size, 0),
        steps_per_epoch=steps_per_epoch(len(xt), cfg.batch_size),
        adversary=make_adversary(cfg, data),
        task_loss=make_kd_task_loss(t, cfg.kd_alpha, cfg.kd_temp),
        params=prunable_params(student, cfg.include_first, cfg.include_last),
        input_shape=data.input_shape,
    )
