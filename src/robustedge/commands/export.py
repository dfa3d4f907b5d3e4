"""`robustedge export RUN`: ONNX / TFLite artifacts with a parity gate and a size ledger."""

from __future__ import annotations

from pathlib import Path

import click

from robustedge.export.evalsets import DEFAULT_CALIB_SAMPLES


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--formats",
    default="onnx,tflite-float32,tflite-int8",
    show_default=True,
    help="Comma list of: onnx, onnx-int8, tflite-float32, tflite-int8, tflite-int8-sparse "
    "(onnx is always made: the others come from it).",
)
@click.option(
    "--calib-samples",
    default=DEFAULT_CALIB_SAMPLES,
    show_default=True,
    type=int,
    help="Training inputs used to calibrate int8 formats.",
)
@click.option(
    "--calib-adv-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Fraction of calibration inputs replaced by their PGD versions.",
)
@click.option(
    "--clean-margin",
    default=1.0,
    show_default=True,
    type=float,
    help="Allowed clean-accuracy loss of int8 formats, in points.",
)
@click.option(
    "--robust-margin",
    default=2.0,
    show_default=True,
    type=float,
    help="Allowed transfer (robust) accuracy loss of int8 formats, in points.",
)
@click.option(
    "--no-parity",
    is_flag=True,
    help="Skip the parity gate (ONNX is still checked against PyTorch).",
)
@click.option(
    "--transfer-steps", default=None, type=int, help="PGD steps of the transfer set (default 20)."
)
@click.option(
    "--transfer-restarts",
    default=None,
    type=int,
    help="PGD restarts of the transfer set (default 5).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--out",
    default=None,
    type=click.Path(path_type=Path),
    help="Export folder (default RUN/export).",
)
def export_cmd(
    run,
    formats,
    calib_samples,
    calib_adv_fraction,
    clean_margin,
    robust_margin,
    no_parity,
    transfer_steps,
    transfer_restarts,
    seed,
    out,
) -> None:
    """Export RUN and check every artifact against PyTorch; writes export.json + ledger.json."""
    from robustedge.export import export_run
    from robustedge.export.ledger import format_table

    report = export_run(
        run,
        formats,
        out=out,
        calib_samples=calib_samples,
        calib_adv_fraction=calib_adv_fraction,
        clean_margin=clean_margin,
        robust_margin=robust_margin,
        check_parity=not no_parity,
        seed=seed,
        transfer_steps=transfer_steps,
        transfer_restarts=transfer_restarts,
    )
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
        att = report.manifest["transfer_attack"]
        click.echo(
            f"PyTorch: clean {100 * first['torch_clean_acc']:.2f}%, transfer "
            f"{100 * first['torch_transfer_acc']:.2f}% ({att['attack']} eps={att['eps']:g} "
            f"steps={att['steps']} restarts={att['restarts']})"
        )
    click.echo("")
    click.echo(format_table(report.ledger))
    click.echo(f"export folder: {report.out}")


COMMANDS = [export_cmd]
