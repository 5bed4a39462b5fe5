"""The one runner of every experiment kind: plan → journal → executor → results.json → report.

Finished units are appended to the kind's journal as they arrive, so Ctrl-C, SIGTERM or a crash
keeps them and a rerun into the same folder skips them by id. results.json and report.md are
rewritten atomically at the end (or on interruption, marked partial). One run holds the output
folder's lock; a second run into it refuses.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

from telebench.execution.board import WorkerBoard
from telebench.execution.journal import FINISHED_STATUSES, Journal, lock
from telebench.execution.registry import get_executor
from telebench.execution.task import Unit
from telebench.experiments.base import Experiment, Loaded, RunOutcome, RunRequest
from telebench.render.progress import progress_bar
from telebench.results.environment import environment
from telebench.results.schema import header
from telebench.results.store import atomic_write_text, dumps, now_iso, prepare_out_dir


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run as Ctrl-C does: finished units kept, workers ended, a partial report."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals to whoever owns it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_experiment(exp: Experiment, config: Loaded, request: RunRequest, console: Console | None = None) -> RunOutcome:
    """Run `config` of kind `exp` into `request.out_dir`, resuming what its journal already holds."""
    console = console or Console()
    out = request.out_dir
    prepare_out_dir(out)
    with lock(out):
        exp.precheck(config, request.data_root)
        plan = exp.plan(config)
        journal = Journal(out, exp.journal_name, key=exp.journal_key)
        finished = journal.finished()
        for warning in journal.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        planned = [u.id for task in plan for u in task]
        done = {i: finished[i] for i in planned if i in finished}
        todo = [[u for u in task if u.id not in done] for task in plan]
        todo = [task for task in todo if task]
        if done:
            n_todo = sum(map(len, todo))
            console.print(f"[dim]Resuming in {out}: {len(done)} finished unit(s) skipped, {n_todo} to run.[/]")
        started, clock = now_iso(), time.perf_counter()
        ran, interrupted = _execute(exp, config, request, todo, journal, done, console)
        results = {
            **header(exp.kind, config.name, str(config.source), config.description),
            "started": started,
            "created": now_iso(),
            "wall_seconds": time.perf_counter() - clock,
            "partial": interrupted or any(done.get(i, {}).get("status") not in FINISHED_STATUSES for i in planned),
            "environment": environment(sorted({u.device for task in plan for u in task})),
            **exp.summarise(config, [done[i] for i in planned if i in done], interrupted),
        }
        atomic_write_text(out / "results.json", dumps(results, indent=1))
        outcome = RunOutcome(results, out, ran=ran, skipped=len(finished.keys() & set(planned)),
                             interrupted=interrupted, warnings=journal.warnings)
        if request.report:
            outcome.report_path = exp.write_report(results, out)
    return outcome


def _execute(exp: Experiment, config: Loaded, request: RunRequest, todo: list[list[Unit]], journal: Journal,
             done: dict[str, dict[str, Any]], console: Console) -> tuple[int, bool]:
    """Run the outstanding tasks, journaling each finished unit; returns (units run, interrupted)."""
    threads = request.threads or exp.default_threads(config)
    name = request.executor or getattr(config, "executor", None) or "local"
    options: dict[str, Any] = {"jobs": request.jobs, "address": request.address,
                               "allow_shared_device": request.allow_shared_device}
    if name != "local":
        options.update(threads=threads, timed=exp.timed)  # workers use a local run's thread count
    executor = get_executor(name, exp.run_task, data_root=request.data_root, **options)
    progress = progress_bar(console, "trials" if exp.kind == "train" else f"{exp.kind} units")
    units = {u.id: u for task in todo for u in task}
    n_todo = len(units)
    bar = progress.add_task(config.name, total=n_todo)
    ran = 0

    def on_progress(unit: Unit, fraction: float) -> None:
        progress.update(bar, advance=fraction, description=unit.label())

    def on_unit(record: dict[str, Any]) -> None:
        nonlocal ran
        journal.append(record)
        done[record["id"]] = record
        ran += 1
        if record.get("status") not in ("ok", "skipped"):
            what = units[record["id"]].label() if record["id"] in units else record["id"]
            progress.console.print(f"[yellow]{escape(what)}: {record['status']}[/] {escape(str(record.get('message', '')))}")

    import torch  # here, so that loading a suite stays light

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with _sigterm_as_interrupt(), progress:
            executor.run(todo, on_unit, on_progress, on_worker=WorkerBoard(progress).update)
            progress.update(bar, completed=n_todo)  # fractional progress can fall a hair short of the total
    except KeyboardInterrupt:
        console.print(f"[yellow]Interrupted: {len(done)} finished unit(s) kept in {journal.path}; "
                      f"rerun with --out {request.out_dir} to resume.[/]")
        return ran, True
    finally:
        torch.set_num_threads(before)
    return ran, False
