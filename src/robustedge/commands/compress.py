"""`robustedge compress`: robust pruning of a teacher run into a student run folder."""

from __future__ import annotations

from pathlib import Path

import click

from robustedge.commands import device_option, parse_kv, print_table


@click.command()
@click.option(
    "--teacher",
    required=True,
    type=click.Path(path_type=Path),
    help="Run folder of the (robust) teacher.",
)
@click.option(
    "--method", default="prox", show_default=True, help="prox | magnitude | admm | hydra | gmp."
)
@click.option(
    "--sparsity",
    default=0.9,
    show_default=True,
    type=float,
    help="Fraction of prunable weights to remove, in [0, 1) (of output channels "
    "with --structured).",
)
@click.option(
    "--structured",
    is_flag=True,
    help="Group lasso over output channels, then physical channel removal.",
)
@click.option(
    "--scope",
    default="global",
    show_default=True,
    type=click.Choice(["global", "layer"]),
    help="Rank weights across or per layer.",
)
@click.option(
    "--adversary",
    default=None,
    help="Training adversary: none | fgsm | pgd | trades | ... [default: pgd; trades for hydra].",
)
@click.option(
    "--adversary-opt",
    "adversary_opts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra adversary option (repeatable), e.g. manifold=RUN.",
)
@click.option("--eps", default=0.1, show_default=True, type=float, help="Linf budget.")
@click.option("--steps", default=10, show_default=True, type=int, help="Adversary steps.")
@click.option(
    "--kd-alpha",
    default=None,
    type=float,
    help="Distillation weight a in [0, 1] [default: 0.5 for prox, 0 otherwise].",
)
@click.option(
    "--kd-temp", default=4.0, show_default=True, type=float, help="Distillation temperature."
)
@click.option("--epochs", default=10, show_default=True, type=int, help="Pruning-phase epochs.")
@click.option(
    "--finetune-epochs",
    default=5,
    show_default=True,
    type=int,
    help="Masked fine-tune epochs (magnitude fine-tunes for epochs + these).",
)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "sgd"]))
@click.option(
    "--lam-schedule",
    default="ball",
    show_default=True,
    type=click.Choice(["ball", "track", "feedback"]),
    help="prox: small fixed lam plus top-k projection onto the ramp's sparsity (ball); "
    "lam set each step so the threshold alone zeroes the ramp's sparsity (track; collapses "
    "at high sparsity); or lam steered multiplicatively from --lam0 (feedback).",
)
@click.option(
    "--lam0",
    default=None,
    type=float,
    help="lam for --lam-schedule ball / initial lam for feedback [default: automatic].",
)
@click.option(
    "--penalty",
    default="reweighted",
    show_default=True,
    type=click.Choice(["reweighted", "l1", "l0"]),
    help="prox: reweighted L1, L1 (soft threshold) or L0 (top-k projection every step).",
)
@click.option(
    "--gmp-initial-sparsity",
    default=0.0,
    show_default=True,
    type=float,
    help="gmp: sparsity at begin step (TF-MOT PolynomialDecay, power 3).",
)
@click.option("--gmp-begin-step", default=0, show_default=True, type=int, help="gmp: first step.")
@click.option(
    "--gmp-end-step",
    default=None,
    type=int,
    help="gmp: step the final sparsity is due [default: end of the pruning phase].",
)
@click.option(
    "--gmp-frequency", default=100, show_default=True, type=int, help="gmp: steps between masks."
)
@click.option("--include-first", is_flag=True, help="Also prune the first conv.")
@click.option("--include-last", is_flag=True, help="Also prune the final linear layer.")
@click.option(
    "--model",
    default=None,
    help="Student model [default: the teacher's, initialised from its weights].",
)
@click.option("--data", default=None, help="Data set [default: the teacher's].")
@click.option("--data-dir", default=None, help="Folder with local data files.")
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    default=("fgsm", "pgd"),
    show_default=True,
    help="Evaluation attack (repeatable).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@device_option()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Student run folder.")
def compress(
    teacher,
    method,
    sparsity,
    structured,
    scope,
    adversary,
    adversary_opts,
    eps,
    steps,
    kd_alpha,
    kd_temp,
    epochs,
    finetune_epochs,
    batch_size,
    lr,
    optimizer,
    lam_schedule,
    lam0,
    penalty,
    include_first,
    include_last,
    model,
    data,
    data_dir,
    attacks,
    seed,
    device,
    out,
    **gmp_opts,
) -> None:
    """Prune TEACHER into a robust sparse (or shrunk) student run folder OUT."""
    from robustedge.attacks import ATTACKS
    from robustedge.compress import CompressConfig, compress_run

    for name in attacks:
        ATTACKS.get(name)
    cfg = CompressConfig(
        teacher=str(teacher),
        method=method,
        sparsity=sparsity,
        structured=structured,
        scope=scope,
        adversary=adversary,
        adversary_opts=parse_kv(adversary_opts, "--adversary-opt"),
        eps=eps,
        steps=steps,
        kd_alpha=kd_alpha,
        kd_temp=kd_temp,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        lam0=lam0,
        lam_schedule=lam_schedule,
        penalty=penalty,
        include_first=include_first,
        include_last=include_last,
        model=model,
        data=data,
        data_dir=data_dir,
        seed=seed,
        device=device,
        **gmp_opts,
    )
    metrics = compress_run(cfg, out, eval_attacks=attacks)
    print_table(metrics)
    sp = metrics["sparsity"]
    click.echo(f"sparsity (prunable weights): {100 * sp['global']:.2f}% of {sp['prunable']}")
    click.echo(
        f"params: {metrics['params']} (non-zero {metrics['nonzero_params']}; teacher "
        f"{metrics['teacher']['params']}), MACs: {metrics['macs']['dense']} "
        f"(non-zero {metrics['macs']['nonzero']}; teacher {metrics['teacher']['macs']})"
    )
    click.echo(f"run folder: {out}")


COMMANDS = [compress]
