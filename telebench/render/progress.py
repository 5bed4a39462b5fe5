"""The one progress bar every experiment kind shows while it trains."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PROGRESS_ENV = "TELEBENCH_PROGRESS"  # "1" shows the bar on a console that is not a terminal too


def shows_progress(console: Console) -> bool:
    """A bar is drawn on a terminal, or anywhere when TELEBENCH_PROGRESS=1 (logs stay clean otherwise)."""
    return console.is_terminal or os.environ.get(PROGRESS_ENV) == "1"


def progress_bar(console: Console, unit: str = "", transient: bool = False) -> Progress:
    """Spinner and description, bar, M of N (followed by `unit`, e.g. "trials"), elapsed time and ETA.

    Add tasks with `add_task(description, total=N)`; use it as a context manager."""
    columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                     MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=transient, disable=not shows_progress(console))
