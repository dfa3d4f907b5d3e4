"""CLI command modules. Each module defines ``COMMANDS``: a list of click commands/groups.

Modules import heavy libraries (torch, tensorflow) inside the command functions, so that
`robustedge --help` stays fast. Register a new module by adding its name to ``MODULES``.
"""

from typing import Any, Callable, Dict, Optional, Sequence

import click

from robustedge.attacks import budget_name
from robustedge.devices import DEVICES
from robustedge.errors import RobustEdgeError

MODULES: list = ["train", "manifold", "compress", "export", "device", "run", "report", "check"]


def device_option(default: Optional[str] = "auto", help: Optional[str] = None) -> Callable:
    """The one ``--device`` option (auto | cpu | cuda) of every training command."""
    return click.option(
        "--device",
        default=default,
        show_default=default is not None,
        type=click.Choice(list(DEVICES)),
        help=help,
    )


def print_table(metrics: dict) -> None:
    """Clean accuracy then one row per attack, each naming its settings."""
    click.echo(f"{'evaluation':<44} {'accuracy':>8}")
    click.echo(f"{'clean':<44} {100 * metrics['clean_acc']:>7.2f}%")
    for r in metrics.get("robust", []):
        click.echo(f"{_label(r):<44} {100 * r['acc']:>7.2f}%")
    if "corruptions" in metrics:
        click.echo(
            f"{'corruptions (mean over types and levels)':<44} "
            f"{100 * metrics['corruptions']['mean']:>7.2f}%"
        )
    for suite in metrics.get("suites", []):
        click.echo(
            f"suite {suite['suite']} eps={suite['eps']:g}: {suite['label']} (n={suite['n']})"
        )
        for r in suite["per_attack"]:
            acc = "-" if r["acc"] is None else f"{100 * r['acc']:.2f}%"
            click.echo(f"  {_label(r):<42} {acc:>8}")
        click.echo(f"  {'worst case per image':<42} {100 * suite['worst_case_acc']:>7.2f}%")


def _label(r: dict) -> str:
    """``pgd eps=0.1 steps=20 restarts=5`` (``onmanifold eta=0.3 steps=40``) for an
    evaluation row."""
    label = f"{r['attack']} {budget_name(r['attack'])}={r['eps']:g}"
    if r.get("steps"):
        label += f" steps={r['steps']}"
    if r.get("restarts", 1) > 1:
        label += f" restarts={r['restarts']}"
    return label


def parse_kv(pairs: Sequence[str], flag: str) -> Dict[str, Any]:
    """``("a=1", "b=x")`` -> ``{"a": 1, "b": "x"}`` for a repeatable ``flag``; values are
    parsed as YAML scalars (numbers, bools), else kept as strings."""
    import yaml

    out: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RobustEdgeError(f"{flag} expects key=value, got '{pair}'")
        try:
            out[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key] = value
    return out
