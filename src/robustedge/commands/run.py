"""`robustedge run RECIPE`: the whole job (teacher -> students -> export -> boards), cached."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from robustedge.commands import device_option


@click.command("run")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option(
    "--out",
    default=None,
    type=click.Path(path_type=Path),
    help="Output folder [default: runs/<recipe name>].",
)
@click.option("--check", is_flag=True, help="Only validate the recipe; run nothing.")
@device_option(
    default=None,
    help="Train the teacher and students here [default: as the recipe says, else auto].",
)
@click.option(
    "--executor",
    default="local",
    show_default=True,
    type=click.Choice(["local", "ray"]),
    help="local: stages in order here (device targets benched at once); ray: independent "
    "stages in parallel as Ray tasks (pip install 'robustedge[scale]').",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to join (e.g. ray://head:10001 or auto) [default: a local Ray]; "
    "OUT must then be on a file system every node sees.",
)
@click.option(
    "--ray-cpus", default=None, type=int, help="CPUs of the local Ray instance [default: all]."
)
def run_cmd(
    recipe: Path,
    out: Optional[Path],
    check: bool,
    device: Optional[str],
    executor: str,
    address: Optional[str],
    ray_cpus: Optional[int],
) -> None:
    """Run RECIPE (YAML), redoing only the stages whose inputs changed or whose outputs are
    missing or corrupt. The whole recipe is validated before any work starts."""
    from robustedge.recipe import load_recipe
    from robustedge.recipe.executors import ExecutorSpec

    spec = ExecutorSpec(executor, address, ray_cpus)

    r = load_recipe(recipe)
    if device is not None:
        r = r.with_device(device)
    if check:
        students = len(r.students())
        targets = len(r.devices.targets) if r.devices else 0
        click.echo(
            f"recipe {recipe} is valid: 1 teacher, {students} student(s), {targets} target(s)"
        )
        return
    from robustedge.recipe.stages import run_recipe

    out = out or Path("runs") / r.name

    parallel = executor != "local"

    def start(stage_id: str) -> None:
        click.echo(f"[    running] {stage_id}" + ("" if parallel else " ..."), nl=parallel)

    def show(res) -> None:
        if res.status == "done":
            click.echo(f"{'' if parallel else chr(13)}[{f'done {res.seconds:.1f}s':>11}] {res.id}")
            return
        note = f"  ({res.note})" if res.note else ""
        click.echo(f"[{res.status:>11}] {res.id}{note}")

    try:
        summary = run_recipe(r, out, on_result=show, on_start=start, executor=spec)
    except Exception:
        click.echo("")  # end the "running" line before the error is printed
        raise
    counts = {
        s: sum(1 for x in summary["stages"] if x["status"] == s)
        for s in ("done", "cached", "skipped")
    }
    click.echo(
        f"{counts['done']} stage(s) run, {counts['cached']} cached, {counts['skipped']} skipped"
    )
    from robustedge.recipe.payoff import board_summary

    for line in board_summary(out):  # the payoff on the board, in numbers (as the report says)
        click.echo(line)
    click.echo(f"output folder: {out}")
    gates = summary.get("gates")
    if gates:  # the recipe's gates: one line per failure, exit 1 (as `robustedge check`)
        for line in gates["failed"]:
            click.echo(f"FAIL {line}")
        click.echo(f"gates: {gates['gates'] - len(gates['failed'])} of {gates['gates']} hold")
        if not gates["passed"]:
            sys.exit(1)


COMMANDS = [run_cmd]
