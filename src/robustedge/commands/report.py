"""`robustedge report RUNS... --out report.html`: HTML + Markdown from the runs' JSON files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import click


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    default=Path("report.html"),
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="HTML file; the Markdown summary is written beside it (.md).",
)
@click.option("--title", default=None, help="Page title [default: robustedge report].")
def report_cmd(runs: Tuple[Path, ...], out: Path, title: Optional[str]) -> None:
    """Report on RUNS (recipe output folders, run folders, or folders holding run folders):
    accuracy vs sparsity, export ledger, on-device results, Pareto view."""
    from robustedge import api

    rep = api.report(list(runs), out, title)
    click.echo(rep.summary)
    click.echo(f"report: {rep.html_path}")
    click.echo(f"summary: {rep.md_path}")


COMMANDS = [report_cmd]
