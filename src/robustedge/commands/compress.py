"""`robustedge compress`: robust pruning of a teacher run into a student run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

import click

from robustedge.commands import device_option, parse_kv, print_table
from robustedge.commands.launch import is_main_rank, nproc_option
from robustedge.commands.train import suite_option

# CLI values that are not CompressConfig fields (every other option is one, by name)
NOT_CONFIG = ("attacks", "suite", "out", "budget", "budget_target", "resume")


def options(*decorators: Callable) -> Callable:
    """Apply click options in the order listed (as stacked decorators would show them)."""

    def apply(f: Callable) -> Callable:
        for deco in reversed(decorators):
            f = deco(f)
        return f

    return apply


# What to prune, and how much (or to which budget).
STUDENT = options(
    click.option(
        "--teacher",
        required=True,
        type=click.Path(path_type=Path),
        help="Run folder of the (robust) teacher.",
    ),
    click.option(
        "--method", default="prox", show_default=True, help="prox | magnitude | admm | hydra | gmp."
    ),
    click.option(
        "--sparsity",
        default=0.9,
        show_default=True,
        type=float,
        help="Fraction of prunable weights to remove, in [0, 1) (of output channels "
        "with --structured).",
    ),
    click.option(
        "--structured",
        is_flag=True,
        help="Group lasso over output channels, then physical channel removal.",
    ),
    click.option(
        "--scope",
        default=None,
        type=click.Choice(["global", "layer", "erk"]),
        help="Rank weights across or per layer (erk: per layer with Erdos-Renyi-Kernel "
        "budgets) [default: global; layer with --structured].",
    ),
    click.option(
        "--budget",
        default=None,
        metavar="KEY=VALUE",
        help="What the board allows, in place of --sparsity: macs=N[k|M|G] | flash_kb=N | "
        "latency_ms=N. Finds the widest structured student that fits and trains it.",
    ),
    click.option(
        "--budget-target",
        default=None,
        help="Where a latency budget is measured: local | ssh://user@host[:port][/path] "
        "(emulated qemu-* targets are refused).",
    ),
)

# The training adversary.
ADVERSARY = options(
    click.option(
        "--adversary",
        default=None,
        help="Training adversary: none | fgsm | pgd | trades | ... "
        "[default: pgd; trades for hydra].",
    ),
    click.option(
        "--adversary-opt",
        "adversary_opts",
        multiple=True,
        metavar="KEY=VALUE",
        help="Extra adversary option (repeatable), e.g. manifold=RUN.",
    ),
    click.option("--eps", default=0.1, show_default=True, type=float, help="Linf budget."),
    click.option("--steps", default=10, show_default=True, type=int, help="Adversary steps."),
    click.option(
        "--awp-gamma",
        default=0.0,
        show_default=True,
        type=float,
        help="Adversarial weight perturbation (Wu et al. 2020) of relative size gamma, e.g. "
        "0.005, on top of the adversary (0: off; it lowered robust accuracy on digits).",
    ),
)

# Knowledge distillation from the teacher.
DISTILL = options(
    click.option(
        "--kd-alpha",
        default=None,
        type=float,
        help="Distillation weight a in [0, 1] [default: 0.5 for prox, 0 otherwise].",
    ),
    click.option(
        "--kd-temp", default=1.0, show_default=True, type=float, help="Distillation temperature."
    ),
    click.option(
        "--kd-target",
        default="clean",
        show_default=True,
        type=click.Choice(["adv", "clean"]),
        help="With --kd-alpha > 0 (any method): the teacher answers on the student's "
        "adversarial example (adv) or on the clean image (clean: robust soft labels, ARD/RSLAD).",
    ),
)

# Epochs and optimizer.
TRAINING = options(
    click.option("--epochs", default=10, show_default=True, type=int, help="Pruning-phase epochs."),
    click.option(
        "--finetune-epochs",
        default=5,
        show_default=True,
        type=int,
        help="Masked fine-tune epochs (magnitude fine-tunes for epochs + these).",
    ),
    click.option(
        "--batch-size",
        default=16,
        show_default=True,
        type=int,
        help="Global batch. On small data sets the optimizer steps, not the epochs, limit the "
        "student: 16 instead of 64 gave every method 2-15 points of worst-case accuracy on "
        "digits for about 2.2x the time (README); on large data sets 64-128 is enough.",
    ),
    click.option("--lr", default=1e-3, show_default=True, type=float),
    click.option(
        "--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "sgd"])
    ),
)

# prox's penalty and lam schedule.
PROX = options(
    click.option(
        "--lam-schedule",
        default="ball",
        show_default=True,
        type=click.Choice(["ball", "track", "feedback"]),
        help="prox: small fixed lam plus top-k projection onto the ramp's sparsity (ball); "
        "lam set each step so the threshold alone zeroes the ramp's sparsity (track; collapses "
        "at high sparsity); or lam steered multiplicatively from --lam0 (feedback).",
    ),
    click.option(
        "--lam0",
        default=None,
        type=float,
        help="lam for --lam-schedule ball / initial lam for feedback [default: automatic].",
    ),
    click.option(
        "--penalty",
        default="l0",
        show_default=True,
        type=click.Choice(["reweighted", "l1", "l0"]),
        help="prox: reweighted L1, L1 (soft threshold) or L0 (top-k projection every step).",
    ),
    click.option(
        "--lazy-prox/--no-lazy-prox",
        default=True,
        show_default=True,
        help="prox: project a dense iterate kept beside the weights (dual averaging), so "
        "pruned weights can come back; one weight-sized tensor of extra state.",
    ),
    click.option(
        "--admm-warm/--no-admm-warm",
        default=False,
        show_default=True,
        help="prox: ADMM's pull towards the target's top-k (rho 0.01, growing as in --method "
        "admm) during the dense warm start (needs --ramp-start > 0): the layer budgets become "
        "ADMM's, the training stays prox's. Two more weight-sized tensors (Z, U) in the phase.",
    ),
    click.option(
        "--ramp-start",
        default=0.0,
        show_default=True,
        type=float,
        help="prox: share of the pruning phase trained dense before the sparsity ramp.",
    ),
    click.option(
        "--ramp-end",
        default=0.75,
        show_default=True,
        type=float,
        help="prox: share of the pruning phase at which the ramp reaches the target.",
    ),
)

# gmp's sparsity schedule.
GMP = options(
    click.option(
        "--gmp-initial-sparsity",
        default=0.0,
        show_default=True,
        type=float,
        help="gmp: sparsity at begin step (TF-MOT PolynomialDecay, power 3).",
    ),
    click.option(
        "--gmp-begin-step", default=0, show_default=True, type=int, help="gmp: first step."
    ),
    click.option(
        "--gmp-end-step",
        default=None,
        type=int,
        help="gmp: step the final sparsity is due [default: end of the pruning phase].",
    ),
    click.option(
        "--gmp-frequency",
        default=100,
        show_default=True,
        type=int,
        help="gmp: steps between masks.",
    ),
)

# Which layers, which student architecture, which data.
LAYERS = options(
    click.option("--include-first", is_flag=True, help="Also prune the first conv."),
    click.option("--include-last", is_flag=True, help="Also prune the final linear layer."),
    click.option(
        "--model",
        default=None,
        help="Student model [default: the teacher's, initialised from its weights].",
    ),
    click.option("--data", default=None, help="Data set [default: the teacher's]."),
    click.option("--data-dir", default=None, help="Folder with local data files."),
)

# Evaluation, seed, device and the output folder.
RUN = options(
    click.option(
        "--attack",
        "attacks",
        multiple=True,
        default=("fgsm", "pgd"),
        show_default=True,
        help="Evaluation attack (repeatable).",
    ),
    suite_option(" Run on the student at --eps."),
    click.option("--seed", default=0, show_default=True, type=int),
    device_option(),
    click.option(
        "--out", required=True, type=click.Path(path_type=Path), help="Student run folder."
    ),
    click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint/last.pt."),
)


@click.command()
@STUDENT
@ADVERSARY
@DISTILL
@TRAINING
@PROX
@GMP
@LAYERS
@RUN
@nproc_option
def compress(**opts: Any) -> None:
    """Prune TEACHER into a robust sparse (or shrunk) student run folder OUT."""
    cfg = compress_config(opts)
    metrics = run_compress(
        cfg,
        opts["budget"],
        opts["budget_target"],
        opts["attacks"],
        opts["out"],
        opts["resume"],
        suite=opts["suite"],
    )
    if is_main_rank():
        report(metrics, opts["out"])


def compress_config(opts: Dict[str, Any]):
    """The CompressConfig of the parsed options (evaluation attacks checked first)."""
    from robustedge.attacks import ATTACKS
    from robustedge.compress import CompressConfig

    for name in opts["attacks"]:
        ATTACKS.get(name)
    if opts.get("suite") is not None:
        from robustedge.attacks.suite import check_suite

        check_suite(opts["suite"])
    fields = {k: v for k, v in opts.items() if k not in NOT_CONFIG}
    fields["teacher"] = str(opts["teacher"])
    fields["adversary_opts"] = parse_kv(opts["adversary_opts"], "--adversary-opt")
    return CompressConfig(**fields)


def run_compress(
    cfg: Any,
    budget: Optional[str],
    target: Optional[str],
    attacks: Any,
    out: Path,
    resume: bool = False,
    suite: Optional[str] = None,
) -> Dict[str, Any]:
    """compress_run, or compress_to_budget when a budget is given (``suite``: also the worst
    case per image over that attack suite in the student's metrics):
    :func:`robustedge.recipe.students.compress_student`."""
    from robustedge.recipe.students import compress_student

    return compress_student(
        cfg, out, budget, target, eval_attacks=attacks, eval_suite=suite, resume=resume
    )


def report(metrics: Dict[str, Any], out: Path) -> None:
    """The accuracy table, sparsity, size and (with a budget) the budget's measurements."""
    print_table(metrics)
    sp = metrics["sparsity"]
    click.echo(f"sparsity (prunable weights): {100 * sp['global']:.2f}% of {sp['prunable']}")
    click.echo(
        f"params: {metrics['params']} (non-zero {metrics['nonzero_params']}; teacher "
        f"{metrics['teacher']['params']}), MACs: {metrics['macs']['dense']} "
        f"(non-zero {metrics['macs']['nonzero']}; teacher {metrics['teacher']['macs']})"
    )
    b = metrics.get("budget")
    if b:
        report_budget(b)
    click.echo(f"run folder: {out}")


def report_budget(b: Dict[str, Any]) -> None:
    """The budget's lines: limit, the student's measure against the teacher's, how the
    structure was made smaller, and (flash) the sizes measured on the exports."""
    from robustedge.compress.budget import WEIGHTS

    where = f" on {b['target']}" if b.get("target") else ""
    how = (
        f"{100 * b['weight_sparsity']:.0f}% of weights zeroed"
        if b.get("structure") == WEIGHTS
        else f"{100 * b['channel_sparsity']:.2f}% of channels removed per layer"
    )
    click.echo(
        f"budget {b['quantity']} <= {b['limit']:g} {b['unit']}{where}: student "
        f"{b['student']:.6g} (teacher {b['teacher']:.6g}; {how}) -> "
        f"{'met' if b['met'] else 'NOT met'}"
    )
    if b.get("measured"):
        m, t = b["measured"], b["teacher_measured"]
        click.echo(
            f"  measured on the {m['format']} export: {m['flash_bytes']:,} flash bytes "
            f"({m['flash_codec']}; teacher {t['flash_bytes']:,}), model bytes "
            f"{m['model_bytes']:,} (teacher {t['model_bytes']:,})"
        )


COMMANDS = [compress]
