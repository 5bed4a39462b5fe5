"""The `telebench` command line. Each command is a thin wrapper over a module that does the work."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from telebench.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark symmetry teleportation: does it make training faster or better?",
)
err_console = Console(stderr=True)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit 2."""
    try:
        app()
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


# ---- commands are registered below, one section each -------------------------------------------
