"""Trace one compression run epoch by epoch: sparsity per layer, mask churn, when the mask
freezes, the method's own schedule values (lam, rho, residual) and test accuracy on the way.

The run is the pipeline's (same teacher, data, adversary, KD task loss, pruning method and
masked fine-tune), built from the library's public pieces so that an ``on_epoch_end`` hook
can look at the weights. After every epoch it records the mask the method would end with if
stopped now (top-k of |W| at the target sparsity) and how many entries of it changed since
the previous epoch; ``frozen_after`` is the last epoch whose mask differs from the final one.
Every ``--eval-every`` epochs: clean and PGD-10 accuracy on the test set (eps 0.1).

    .venv/bin/python benchmarks/compression_trace.py --teacher RUN --variant admm --sparsity 0.95
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tradeoff  # noqa: E402
from _common import hardware, write_result  # noqa: E402
from compression_diagnosis import VARIANTS, add_variant  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--variant", default="prox")
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    tradeoff.METHODS.update(VARIANTS)  # the trade-off methods and the diagnosis's variants
    variant = add_variant(args.variant)

    import torch

    from robustedge.compress import PRUNERS
    from robustedge.compress.common import masked_finetune

    cfg, ctx, test = build(args, variant)
    trace, masks_seen = [], []
    ctx.on_epoch_end = tracer(args, ctx, test, trace, masks_seen)
    t0 = time.perf_counter()
    outcome = PRUNERS.get(cfg.method)(ctx)
    masked_finetune(ctx, outcome.masks, outcome.finetune_epochs)
    final = masks_seen[-1]
    differs = [
        i + 1 for i, m in enumerate(masks_seen) if any(not torch.equal(m[n], final[n]) for n in m)
    ]
    frozen_after = max(differs, default=0)
    overlap = [
        round(sum(int((m[n] & final[n]).sum()) for n in m) / sum(int(final[n].sum()) for n in m), 4)
        for m in masks_seen
    ]
    print(f"mask frozen after epoch {frozen_after}; overlap with final mask per epoch: {overlap}")
    payload = {
        "benchmark": "compression_trace",
        "hardware": hardware(),
        "settings": {**vars(args), "config": cfg.to_dict()},
        "trace": trace,
        "frozen_after": frozen_after,
        "overlap_with_final": overlap,
        "notes": {k: v for k, v in outcome.notes.items() if not isinstance(v, dict)},
        "seconds": time.perf_counter() - t0,
    }
    name = args.name or f"trace_{variant}_{args.sparsity:g}_s{args.seed}"
    print(f"wrote {write_result(name, payload)}")


def build(args, variant: str):
    """(config, PruneContext, (x_test, y_test)) of the traced run: the pipeline's pieces."""
    import torch

    from robustedge.compress import CompressConfig, PruneContext, make_kd_task_loss
    from robustedge.compress.common import steps_per_epoch
    from robustedge.compress.pipeline import build_student, load_teacher, make_adversary
    from robustedge.compress.targets import prunable_params
    from robustedge.training import epoch_batches

    kw = {"adversary": "pgd", "eps": args.eps, "steps": args.steps, **tradeoff.METHODS[variant]}
    cfg = CompressConfig.from_keys(
        teacher=args.teacher,
        sparsity=args.sparsity,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        seed=args.seed,
        **kw,
    )
    teacher, t_spec, _, data = load_teacher(cfg)
    adversary = make_adversary(cfg, data)
    torch.manual_seed(cfg.seed)
    _, student = build_student(cfg, teacher, t_spec, data)
    xt, yt = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    ctx = PruneContext(
        model=student,
        cfg=cfg,
        batches=epoch_batches(xt, yt, cfg.batch_size, cfg.seed),
        steps_per_epoch=steps_per_epoch(len(xt), cfg.batch_size),
        adversary=adversary,
        task_loss=make_kd_task_loss(teacher, cfg.kd_alpha, cfg.kd_temp),
        params=prunable_params(student, cfg.include_first, cfg.include_last),
        input_shape=data.input_shape,
    )
    return cfg, ctx, (torch.as_tensor(data.x_test), torch.as_tensor(data.y_test))


def tracer(args, ctx, test, trace: list, masks_seen: list):
    """The ``on_epoch_end`` hook: appends each epoch's row to ``trace`` and the mask the
    method would end with to ``masks_seen`` (clean / PGD-10 accuracy every eval_every)."""
    from robustedge.attacks import AttackSpec
    from robustedge.compress.prox import topk_masks
    from robustedge.training.evaluate import accuracy, robust_accuracy

    params, student, (xs, ys) = ctx.params, ctx.model, test
    pgd = AttackSpec("pgd", args.eps, steps=10)
    prev, counter = [None], [0]

    def on_epoch_end(epoch, record):
        counter[0] += 1
        mask = topk_masks({n: p.detach().abs() for n, p in params.items()}, ctx.cfg.sparsity)
        churn = 0 if prev[0] is None else sum(int((mask[n] ^ prev[0][n]).sum()) for n in mask)
        prev[0] = mask
        masks_seen.append(mask)
        row = {
            "epoch": counter[0],
            **{k: v for k, v in record.items() if k != "epoch"},
            "zeros": {n: round(float((p == 0).float().mean()), 4) for n, p in params.items()},
            "topk_layers": {n: round(1 - float(m.float().mean()), 4) for n, m in mask.items()},
            "mask_churn": churn,
        }
        if counter[0] % args.eval_every == 0:
            was = student.training
            row["clean"] = accuracy(student, xs, ys)
            row["pgd10"] = robust_accuracy(student, xs, ys, pgd)
            student.train(was)
        trace.append(row)
        print(
            f"  {row['phase']} {counter[0]}: loss {row['loss']:.3f} churn {churn} "
            f"topk {row['topk_layers']} zeros {row['zeros']}"
            + (f" clean {row['clean']:.3f} pgd10 {row['pgd10']:.3f}" if "clean" in row else "")
            + "".join(f" {k} {row[k]:.4g}" for k in ("rho", "admm_residual") if k in row),
            flush=True,
        )

    return on_epoch_end


if __name__ == "__main__":
    main()
