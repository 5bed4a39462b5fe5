"""`telebench correlate`: train every network of a study, measure it, correlate, report.

Each finished network is appended to the study's journal, ``networks.jsonl`` in the output folder
(:class:`telebench.execution.journal.Journal`: flushed and fsynced per network, a torn last line
repaired), so an interrupted study resumes where it stopped; a network is identified by its case's
settings and its seed (:mod:`~telebench.experiments.correlation.unit`). One run holds the folder's
lock. The networks are units of the shared executors: with ``jobs > 1`` they train in a pool of
``jobs`` worker processes; this is untimed work, so the workers share the machine, each with
``cores // jobs`` torch threads. A network that fails is recorded as an error, the study goes on,
and a rerun retries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from telebench.errors import UserError
from telebench.execution.journal import Journal, lock
from telebench.execution.local import LocalExecutor
from telebench.execution.process import ProcessExecutor
from telebench.execution.task import Unit
from telebench.experiments.correlation.report import (
    build_results,
    render_terminal,
    write_report,
    write_results,
)
from telebench.experiments.correlation.schema import Study
from telebench.experiments.correlation.train import NetworkRecord
from telebench.experiments.correlation.unit import (
    FINISHED,
    JOURNAL,
    NetworkUnit,
    case_key,
    journal_id,
    journal_line,
    network_record,
    run_networks,
)
from telebench.render.progress import progress_bar
from telebench.results.store import prepare_out_dir
from telebench.training.precheck import check_datasets

__all__ = ["JOURNAL", "Outcome", "case_key", "executor_for", "run_study"]

ERROR_FIELDS = ("id", "case", "seed", "case_key", "status", "message", "traceback", "host")


@dataclass(frozen=True)
class Outcome:
    results: dict[str, Any]
    out_dir: Path
    report: Path
    trained: int
    resumed: int


def executor_for(jobs: int, data_root: str | None) -> LocalExecutor | ProcessExecutor:
    """`--jobs 1`: this process; more: a pool of `jobs` workers, all busy at once (untimed work)."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: use at least 1 worker.")
    if jobs == 1:
        return LocalExecutor(run_networks, data_root=data_root)
    return ProcessExecutor(run_networks, data_root=data_root, jobs=jobs, timed=False)


def run_study(
    study: Study, out_dir: Path, jobs: int = 1, data_root: str | None = None, console: Console | None = None
) -> Outcome:
    """Train and measure every network of ``study`` (resuming from ``out_dir``), then write the report."""
    executor = executor_for(jobs, data_root)
    console = console or Console()
    prepare_out_dir(out_dir)
    with lock(out_dir):
        check_datasets((case.dataset for case in study.cases), data_root)
        units = [NetworkUnit.of(case, seed) for case in study.cases for seed in case.seeds]
        journal = Journal(out_dir, JOURNAL, key=journal_id)
        finished = journal.finished()
        for warning in journal.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        done = {u.id: network_record(finished[u.id]) for u in units if u.id in finished}
        resumed = len(done)
        todo = [u for u in units if u.id not in done]
        interrupted = _train(executor, todo, journal, done, console, f"training {study.name}", len(units))
        records = [done[u.id] for u in units if u.id in done]
        results = build_results(study, records, partial=interrupted or len(records) < len(units))
        write_results(results, out_dir)
        report = write_report(results, out_dir)
    render_terminal(results, console)
    if interrupted:
        raise KeyboardInterrupt
    return Outcome(results, out_dir, report, len(todo), resumed)


def _train(executor: LocalExecutor | ProcessExecutor, todo: list[NetworkUnit], journal: Journal,
           done: dict[str, NetworkRecord], console: Console, description: str, total: int) -> bool:
    """Train the outstanding networks, journaling each as it finishes; True if Ctrl-C stopped it."""
    keys = {u.id: u.key for u in todo}
    progress = progress_bar(console, "networks")
    bar = progress.add_task(description, total=total, completed=total - len(todo))

    def on_network(record: dict[str, Any]) -> None:
        if record.get("status") in FINISHED:
            network = network_record(record)
            journal.append(journal_line(network, keys[record["id"]]))
            done[record["id"]] = network
        else:  # the executor's record of a network that raised: kept for the record, retried on a rerun
            journal.append({k: record[k] for k in ERROR_FIELDS if k in record})
            progress.console.print(f"[yellow]{escape(str(record.get('case')))} · seed {record.get('seed')}: "
                                   f"{record.get('status')}[/] {escape(str(record.get('message', '')))}")
        progress.advance(bar)

    tasks: list[list[Unit]] = [[unit] for unit in todo]
    try:
        with progress:
            executor.run(tasks, on_network, None)
    except KeyboardInterrupt:
        return True
    return False
