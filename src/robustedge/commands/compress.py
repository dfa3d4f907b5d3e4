"""`robustedge compress`: robust pruning of a teacher run into a student run folder.

The options are generated from :class:`~robustedge.compress.CompressConfig` (the shared
settings) and from the options of every registered pruning method
(``robustedge.compress.PRUNERS``): :func:`build_compress_command` builds the command, so a
command built after a method was registered offers that method's options too.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import click

from robustedge.commands import parse_kv, print_table
from robustedge.commands.launch import is_main_rank, nproc_option
from robustedge.commands.options import config_options, field_option, option_name, stack
from robustedge.commands.train import suite_option
from robustedge.training.evaluate import EvalPlan

# CompressConfig settings listed first (what to prune, and how much), before the budget options
STUDENT = ("teacher", "method", "sparsity", "structured", "scope")

# What the board allows, in place of --sparsity.
BUDGET = stack(
    click.option(
        "--budget",
        default=None,
        metavar="KEY=VALUE",
        help="What the board allows, in place of --sparsity: macs=N[k|M|G] | flash_kb=N | "
        "latency_ms=N | arena_kb=N | tflm_flash_kb=N (microcontrollers: TFLM's arena and "
        "flash); several joined by commas must all hold (arena_kb=28,tflm_flash_kb=23). Finds "
        "the widest structured student that fits and trains it.",
    ),
    click.option(
        "--budget-target",
        default=None,
        help="Where a latency budget is measured: local | ssh://user@host[:port][/path] "
        "(emulated qemu-* targets are refused).",
    ),
)

# Evaluation and the output folder.
RUN = stack(
    config_options(EvalPlan, only=["attacks"]),
    suite_option(" Run on the student at --eps."),
    click.option(
        "--out", required=True, type=click.Path(path_type=Path), help="Student run folder."
    ),
    click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint/last.pt."),
)


def shared_options() -> Callable:
    """The options of CompressConfig's settings (the budget options after the STUDENT ones);
    the help of a setting a method may default names the methods' own defaults."""
    from robustedge.compress import CompressConfig
    from robustedge.compress.config import METHOD_DEFAULTS, method_defaults_help

    overrides: Dict[str, Dict[str, Any]] = {"teacher": {"required": True}}
    for name in METHOD_DEFAULTS:
        overrides[name] = {"help_suffix": " " + method_defaults_help(name)}
    return stack(
        config_options(CompressConfig, only=STUDENT, overrides=overrides),
        BUDGET,
        config_options(CompressConfig, exclude=STUDENT, overrides=overrides),
    )


def method_options() -> Callable:
    """One option per option of every registered method (once for an option two methods
    share), its help naming the methods that read it."""
    from robustedge.compress.config import option_fields, option_owners

    owners = option_owners()
    decos = []
    for name, (cls, f) in option_fields().items():
        suffix = f" (--method {' / '.join(owners[name])})"
        decos.append(field_option(f, typing.get_type_hints(cls)[name], help_suffix=suffix))
    return stack(*decos)


def build_compress_command() -> click.Command:
    """The `compress` command, offering the options of the methods registered now."""

    @click.command("compress")
    @shared_options()
    @method_options()
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

    return compress


def compress_config(opts: Dict[str, Any]):
    """The CompressConfig of the parsed options (evaluation attacks checked first): the
    shared settings and the chosen method's options (other methods' options must be at their
    defaults)."""
    from robustedge.attacks import ATTACKS
    from robustedge.compress import CompressConfig
    from robustedge.compress.config import flat_key_types

    for name in opts["attacks"]:
        ATTACKS.get(name)
    if opts.get("suite") is not None:
        from robustedge.attacks.suite import check_suite

        check_suite(opts["suite"])
    keys = {k: v for k, v in opts.items() if k in flat_key_types()}
    keys["teacher"] = str(opts["teacher"])
    hints = typing.get_type_hints(CompressConfig)
    for f in dataclasses.fields(CompressConfig):  # KEY=VALUE pairs into mappings
        if typing.get_origin(hints[f.name]) is dict and f.name in keys:
            keys[f.name] = parse_kv(keys[f.name] or (), option_name(f) or f.name)
    return CompressConfig.from_keys(**keys)


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
    case per image over that attack suite in the student's metrics): :func:`robustedge.api.
    compress`, returning the student's metrics."""
    from robustedge import api

    result = api.compress(
        cfg, out=out, budget=budget, target=target, attacks=attacks, suite=suite, resume=resume
    )
    return result.to_json()


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
    for c in b.get("constraints", ()):  # a joint budget: each limit on its own
        click.echo(
            f"  {c['quantity']} <= {c['limit']:g} {c['unit']}: student {c['student']:.6g} "
            f"(teacher {c['teacher']:.6g}) -> {'met' if c['met'] else 'NOT met'}"
        )
    if b.get("measured") and "flash_bytes" in b["measured"]:
        m, t = b["measured"], b["teacher_measured"]
        click.echo(
            f"  measured on the {m['format']} export: {m['flash_bytes']:,} flash bytes "
            f"({m['flash_codec']}; teacher {t['flash_bytes']:,}), model bytes "
            f"{m['model_bytes']:,} (teacher {t['model_bytes']:,})"
        )


compress = build_compress_command()
COMMANDS = [compress]
