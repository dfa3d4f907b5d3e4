"""Run under torchrun by tests/test_ddp.py: prune a teacher data-parallel and save what each
rank ends with (masks, weights, method state) to OUT/rank<R>_<method>.pt for comparison.

Usage: torchrun --nproc-per-node N tests/_ddp_worker.py TEACHER OUT METHOD...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from robustedge import distributed
from robustedge.compress import CompressConfig
from robustedge.compress.common import PRUNERS, masked_finetune
from robustedge.compress.pipeline import build_student, load_teacher, make_adversary, make_context
from robustedge.training.run import seed_everything


def main() -> None:
    torch.set_num_threads(1)
    teacher_dir, out = sys.argv[1], Path(sys.argv[2])
    with distributed.session(torch.device("cpu")) as world:
        for method in sys.argv[3:]:
            cfg = CompressConfig(
                teacher=teacher_dir,
                method=method,
                sparsity=0.8,
                epochs=2,
                finetune_epochs=1,
                adversary="pgd",
                eps=0.1,
                steps=2,
                batch_size=64,
                seed=1,
                device="cpu",
            )
            teacher, t_spec, _, data = load_teacher(cfg)
            adversary = make_adversary(cfg, data)
            adversary.seed(cfg.seed, world.rank)
            seed_everything(cfg.seed)
            _, student = build_student(cfg, teacher, t_spec, data)
            ctx = make_context(cfg, student, teacher, adversary, data, torch.device("cpu"))
            outcome = PRUNERS.get(method)(ctx)
            masked_finetune(ctx, outcome.masks, outcome.finetune_epochs)
            starts = torch.rand(4, generator=adversary.generator)  # per-rank stream
            torch.save(
                {
                    "masks": outcome.masks,
                    "weights": ctx.model.state_dict(),
                    "next_random_start": starts,
                    "world_size": world.size,
                },
                out / f"rank{world.rank}_{method}.pt",
            )


if __name__ == "__main__":
    main()
