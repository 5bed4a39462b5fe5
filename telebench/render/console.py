"""The one rich Console every command prints to: rich's own on a terminal, wide when piped.

Through a pipe, a file or a CI log rich cannot ask for a width and assumes 80 columns, so a summary
table of a dozen columns folds its cells letter by letter ("optim/izer", "basel/ine"). A log has no
width to respect: off a terminal the console is `COLUMNS` wide when that is set (a CI that sets it
means it), else PIPED_WIDTH, which fits every table telebench prints. On a terminal nothing changes:
rich measures the window itself.
"""

from __future__ import annotations

import os
from typing import IO

from rich.console import Console

PIPED_WIDTH = 200


def piped_width(environ: dict[str, str] | None = None) -> int:
    """The width off a terminal: `COLUMNS` when it is a positive integer, else PIPED_WIDTH."""
    text = (os.environ if environ is None else environ).get("COLUMNS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else PIPED_WIDTH


def make_console(stderr: bool = False, *, file: IO[str] | None = None) -> Console:
    """A Console on stdout (`stderr=True`: stderr; `file`: that stream), rich's default on a terminal,
    and `piped_width()` columns wide anywhere else."""
    console = Console(stderr=stderr, file=file)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, file=file, width=piped_width())

