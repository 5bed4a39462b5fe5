"""`telebench correlate`: train every network of a study, measure it, correlate, report.

Each finished network is appended to ``networks.jsonl`` in the output folder, so an interrupted
study resumes where it stopped (a network is identified by its case's settings and its seed).
With ``jobs > 1`` the networks train in a process pool: this is untimed work, so the workers may
share the machine; each gets ``cores // jobs`` torch threads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from telebench.errors import UserError
from telebench.experiments.correlation.report import (
    build_results,
    render_terminal,
    write_report,
    write_results,
)
from telebench.experiments.correlation.schema import Study, StudyCase
from telebench.experiments.correlation.train import NetworkRecord, train_network
from telebench.experiments.pairs.run import prepare_out_dir
from telebench.training.data import load_dataset

LOG = "networks.jsonl"


@dataclass(frozen=True)
class Outcome:
    results: dict
    out_dir: Path
    report: Path
    trained: int
    resumed: int


def case_key(case: StudyCase) -> str:
    """A hash of everything that determines a case's networks except the count of them."""
    blob = json.dumps({k: v for k, v in case.describe().items() if k not in ("networks", "seeds")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _done(out_dir: Path, study: Study) -> dict[tuple[str, int], NetworkRecord]:
    """Networks already in the log whose case settings are unchanged."""
    path = out_dir / LOG
    if not path.exists():
        return {}
    keys = {case.name: case_key(case) for case in study.cases}
    done = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interruption
            continue
        if keys.get(row.get("case")) == row.pop("case_key", None):
            row.pop("gap", None)
            record = NetworkRecord(**row)
            done[(record.case, record.seed)] = record
    return done


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _execute(
    tasks: list[tuple[StudyCase, int]], jobs: int, data_root: str | None, on_done: Callable[[NetworkRecord], None]
) -> None:
    if jobs <= 1:
        for case, seed in tasks:
            on_done(train_network(case, seed, data_root))
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(threads,)) as pool:
        pending: set[Future[NetworkRecord]] = {pool.submit(train_network, case, seed, data_root) for case, seed in tasks}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    on_done(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _check_data(study: Study, data_root: str | None) -> None:
    """Missing dataset files stop the study before any network trains."""
    for spec in {case.dataset for case in study.cases}:
        load_dataset(spec, data_root)


def run_study(
    study: Study, out_dir: Path, jobs: int = 1, data_root: str | None = None, console: Console | None = None
) -> Outcome:
    """Train and measure every network of ``study`` (resuming from ``out_dir``), then write the report."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: use at least 1 worker.")
    console = console or Console()
    prepare_out_dir(out_dir)
    _check_data(study, data_root)
    done = _done(out_dir, study)
    tasks = [(case, seed) for case in study.cases for seed in case.seeds if (case.name, seed) not in done]
    records = list(done.values())
    keys = {case.name: case_key(case) for case in study.cases}
    log = (out_dir / LOG).open("a", encoding="utf-8")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    interrupted = False
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task(f"training {study.name}", total=len(tasks) + len(done), completed=len(done))

            def on_done(record: NetworkRecord) -> None:
                records.append(record)
                log.write(json.dumps({**record.to_dict(), "case_key": keys[record.case]}) + "\n")
                log.flush()
                progress.advance(bar)

            _execute(tasks, jobs, data_root, on_done)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        log.close()
    results = build_results(study, _ordered(records, study), partial=interrupted)
    write_results(results, out_dir)
    report = write_report(results, out_dir)
    render_terminal(results, console)
    if interrupted:
        raise KeyboardInterrupt
    return Outcome(results, out_dir, report, len(tasks), len(done))


def _ordered(records: Iterable[NetworkRecord], study: Study) -> list[NetworkRecord]:
    wanted = {(case.name, seed) for case in study.cases for seed in case.seeds}
    return sorted((r for r in records if (r.case, r.seed) in wanted), key=lambda r: (r.case, r.seed))
