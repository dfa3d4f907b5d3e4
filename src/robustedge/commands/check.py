"""`robustedge check RESULTS... --expect 'clean>=0.97'`: gates for CI (exit 0 / 1 / 2)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click

from robustedge.commands.options import config_options, lazy_option
from robustedge.gates.spec import RegressionConfig

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def expect_help() -> str:
    """--expect's help, naming the gateable metrics (robustedge.gates.metrics.METRICS)."""
    from robustedge.gates.metrics import METRICS

    return (
        "Gate on every model and target, repeatable: METRIC OP VALUE, e.g. 'clean>=0.97', "
        "'robust>=75%', 'flash_kb<=64', 'parity=pass', 'p50_vs_teacher<=0.7'. Metrics: "
        + " | ".join(METRICS.names())
        + "."
    )


@click.command("check")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@lazy_option("--expect", "expects", multiple=True, metavar="GATE", help_fn=expect_help)
@click.option(
    "--gates",
    "gates_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML with a gates: section (a recipe, or just the section): per-model and "
    "per-target gates. A recipe output folder's own gates apply by themselves.",
)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    default=None,
    help="Results file or folder of the last accepted run: fail on significant accuracy "
    "drops, flash growth and latency-ratio growth (see the thresholds below).",
)
@config_options(RegressionConfig)
@click.option("--junit", type=click.Path(path_type=Path), default=None, help="Write JUnit XML.")
@click.option(
    "--markdown",
    "markdown_out",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Write a Markdown summary (also appended to ${SUMMARY_ENV} when that is set).",
)
@click.option(
    "--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write JSON."
)
def check_cmd(
    results: Tuple[Path, ...],
    expects: Tuple[str, ...],
    gates_file: Optional[Path],
    baseline: Optional[Path],
    junit: Optional[Path],
    markdown_out: Optional[Path],
    json_out: Optional[Path],
    **opts: Any,
) -> None:
    """Gate RESULTS (board results JSON files, bundles, run or recipe folders): exit 0 when
    every gate holds, 1 when one fails (one line each: model, target, metric, measured,
    threshold), 2 for bad input."""
    from robustedge.api import check
    from robustedge.gates import load_gates_file
    from robustedge.gates.report import junit_xml, markdown
    from robustedge.io import write_json, write_text

    spec = load_gates_file(gates_file) if gates_file else None
    given = given_options(click.get_current_context(), opts)
    result = check(results, expects, gates=spec, baseline=baseline, **given)
    md = markdown(result)
    if junit:
        write_text(junit, junit_xml(result))
    if markdown_out:
        write_text(markdown_out, md)
    if json_out:
        write_json(json_out, result.to_dict())
    summary = os.environ.get(SUMMARY_ENV)
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(md + "\n")
    for note in result.notes:
        click.echo(f"note: {note}")
    for o in result.failures:
        click.echo(f"FAIL {o.line}")
    n, bad = len(result.outcomes), len(result.failures)
    click.echo(f"{n - bad} of {n} gates hold" + ("" if bad else ": ok"))
    if bad:
        sys.exit(1)


def given_options(ctx: click.Context, opts: Dict[str, Any]) -> Dict[str, Any]:
    """The thresholds given on the command line: they replace the gates file's (the others
    keep the file's, else the defaults)."""
    from click.core import ParameterSource

    return {
        k: v for k, v in opts.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE
    }


COMMANDS = [check_cmd]
