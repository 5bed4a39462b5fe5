"""Notes and warnings about a suite, printed before `validate`, `list` and `run` say anything else."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape

WARNING = "warning: "  # a note that starts so is printed as a warning (the suite still runs)


def print_notes(notes: Iterable[str], console: Console) -> None:
    for note in notes:
        if note.startswith(WARNING):
            console.print(f"[bold yellow]warning:[/] {escape(note.removeprefix(WARNING))}", highlight=False)
        else:
            console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
