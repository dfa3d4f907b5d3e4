"""The `robustedge` command line: the click group that assembles ``robustedge.commands``.

Each command (one module per family in :mod:`robustedge.commands`) builds a config, calls one
library function and prints a summary. User mistakes become one line on stderr and exit code
2; no tracebacks.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

import click

from robustedge.errors import RobustEdgeError


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
@click.version_option(package_name="robustedge")
def cli(verbose: bool) -> None:
    """Robust, compressed CNNs from PyTorch to ARM boards."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _register_commands() -> None:
    import importlib

    from robustedge.commands import MODULES

    for name in MODULES:
        module = importlib.import_module(f"robustedge.commands.{name}")
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point: run the group, turning user mistakes into one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name="robustedge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (RobustEdgeError, ValueError, FileNotFoundError, PermissionError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
