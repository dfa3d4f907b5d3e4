"""`robustedge export RUN`: ONNX / TFLite artifacts with a parity gate and a size ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from robustedge.commands.options import config_from_options, config_options
from robustedge.config import default_of
from robustedge.export.config import ExportConfig

# --formats stays one comma list (the field is a tuple: repeatable otherwise)
FORMATS_OPTION = {
    "multiple": False,
    "type": str,
    "default": ",".join(default_of(ExportConfig, "formats")),
}


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@config_options(ExportConfig, overrides={"formats": FORMATS_OPTION})
@click.option(
    "--out",
    default=None,
    type=click.Path(path_type=Path),
    help="Export folder (default RUN/export).",
)
def export_cmd(run: Path, out: Optional[Path], **opts: Any) -> None:
    """Export RUN and check every artifact against PyTorch; writes export.json + ledger.json."""
    from robustedge import api
    from robustedge.export.ledger import format_table

    report = api.export(run, config_from_options(ExportConfig, opts), out=out)
    click.echo(
        f"{'format':<16} {'file':<22} {'bytes':>9} {'clean':>8} {'transfer':>9} "
        f"{'max|dlogit|':>11}  gate"
    )
    for fmt, a in report.artifacts.items():
        p = a["parity"]
        if p.get("skipped"):
            click.echo(
                f"{fmt:<16} {a['file']:<22} {a['bytes']:>9,} {'-':>8} {'-':>9} {'-':>11}  off"
            )
            continue
        click.echo(
            f"{fmt:<16} {a['file']:<22} {a['bytes']:>9,} {100 * p['clean_acc']:>7.2f}% "
            f"{100 * p['transfer_acc']:>8.2f}% {p['max_abs_logit_diff']:>11.3g}  "
            f"{'pass' if p['passed'] else 'FAIL'}"
        )
    first = next(iter(report.artifacts.values()))["parity"]
    if not first.get("skipped"):
        att = report.extra["transfer_attack"]
        click.echo(
            f"PyTorch: clean {100 * first['torch_clean_acc']:.2f}%, transfer "
            f"{100 * first['torch_transfer_acc']:.2f}% ({att['attack']} eps={att['eps']:g} "
            f"steps={att['steps']} restarts={att['restarts']})"
        )
    click.echo("")
    click.echo(format_table(report.ledger))
    click.echo(f"export folder: {report.out}")


COMMANDS = [export_cmd]
