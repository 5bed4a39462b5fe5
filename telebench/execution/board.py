"""Per-worker rows under the run's progress bar: what each worker trains now and how much it finished.

    board = WorkerBoard(progress)
    executor.run(pairs, on_trial, on_progress, on_worker=board.update)
"""

from __future__ import annotations

from rich.progress import Progress, TaskID

from telebench.execution.base import WorkerStatus


def describe(status: WorkerStatus) -> str:
    if not status.alive:
        doing = "[red]died[/] (its pair is retried)"
    elif status.running:
        first = status.running[0]
        n = len(status.running)
        doing = f"{first.task_label()} ({n} {first.noun}{'s' * (n != 1)})"
    else:
        doing = "[dim]idle[/]"
    return f"  {status.label}: {doing}"


class WorkerBoard:
    """One extra row per worker in a rich Progress; the row's count (N/?) is the trials it finished."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.rows: dict[str, TaskID] = {}

    def update(self, status: WorkerStatus) -> None:
        row = self.rows.get(status.label)
        if row is None:
            self.rows[status.label] = self.progress.add_task(describe(status), total=None, completed=status.finished)
        else:
            self.progress.update(row, description=describe(status), completed=status.finished)
