"""`telebench run`: plan → executor → results.jsonl → results.json → reports.

Finished trials are appended to results.jsonl as they arrive, so Ctrl-C or a crash keeps them and
a rerun into the same folder skips them by spec hash. results.json and report.md are rewritten
atomically at the end (or on interruption, marked partial).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from telebench.errors import UserError
from telebench.execution.journal import Journal
from telebench.experiments.pairs.spec import TrialSpec
from telebench.results.environment import environment
from telebench.results.schema import SCHEMA
from telebench.results.store import atomic_write_text, dumps, now_iso


def group_pairs(plan: Iterable[TrialSpec]) -> list[list[TrialSpec]]:
    """Arms sharing a pair key, in plan order: the unit every executor schedules."""
    pairs: dict[tuple, list[TrialSpec]] = {}
    for spec in plan:
        pairs.setdefault(spec.pair_key, []).append(spec)
    return list(pairs.values())


def default_out_dir(suite_name: str) -> Path:
    return Path("reports") / f"{suite_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare_out_dir(out: Path) -> None:
    """Fail before training starts, not after, when results could not be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".telebench-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"--out {out}: the output folder cannot be written ({exc.strerror or exc}); choose a writable folder with --out."
        ) from None


def check_datasets(plan: list[TrialSpec], data_root: str | None) -> None:
    """Load each distinct dataset once up front, so missing files stop the run before any training."""
    from telebench.training.data import load_dataset

    for ds in {s.dataset for s in plan}:
        load_dataset(ds, data_root)


@dataclass
class RunOutcome:
    results: dict[str, Any]
    out_dir: Path
    ran: int
    skipped: int
    interrupted: bool = False
    report_path: Path | None = None
    notes: list[str] = field(default_factory=list)


def build_results(
    suite_name: str,
    suite_path: str,
    plan: list[TrialSpec],
    trials_by_id: dict[str, dict[str, Any]],
    partial: bool,
    description: str = "",
) -> dict[str, Any]:
    from telebench.analysis.summary import resolve_targets, summarise

    trials = [trials_by_id[s.id] for s in plan if s.id in trials_by_id]
    trials = resolve_targets(trials)
    return {
        "schema": SCHEMA,
        "suite": suite_name,
        "suite_path": suite_path,
        "description": description,
        "created": now_iso(),
        "partial": partial,
        "environment": environment(sorted({s.device for s in plan})),
        "trials": trials,
        "summary": summarise(trials),
    }


def run_plan(
    plan: list[TrialSpec],
    suite_name: str,
    suite_path: str,
    out_dir: Path,
    executor_name: str = "local",
    executor_options: dict[str, Any] | None = None,
    data_root: str | None = None,
    console: Console | None = None,
    write_report: bool = True,
    description: str = "",
) -> RunOutcome:
    from telebench.execution.board import WorkerBoard
    from telebench.execution.registry import get_executor
    from telebench.experiments.pairs.loop import run_pair

    console = console or Console()
    prepare_out_dir(out_dir)
    check_datasets(plan, data_root)
    log = Journal(out_dir)
    finished = log.finished()
    planned_ids = {s.id for s in plan}
    done = {k: v for k, v in finished.items() if k in planned_ids}
    pairs = [p for p in group_pairs(plan) if any(s.id not in done for s in p)]
    todo = [[s for s in p if s.id not in done] for p in pairs]
    n_todo = sum(len(p) for p in todo)
    if done:
        console.print(f"[dim]Resuming in {out_dir}: {len(done)} finished trial(s) skipped, {n_todo} to run.[/]")

    executor = get_executor(executor_name, run_pair, data_root=data_root, **(executor_options or {}))
    interrupted = False
    ran = 0
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("trials"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal and os.environ.get("TELEBENCH_PROGRESS") != "1",
    )
    task = progress.add_task(suite_name, total=n_todo)

    def on_progress(spec: TrialSpec, fraction: float) -> None:
        progress.update(
            task,
            advance=fraction,
            description=f"{spec.case} · {spec.optimizer_label} · {spec.arm} · seed {spec.seed}",
        )

    def on_trial(record: dict[str, Any]) -> None:
        nonlocal ran
        log.append(record)
        done[record["id"]] = record
        ran += 1
        if record.get("status") not in ("ok", "skipped"):
            progress.console.print(
                f"[yellow]{record['case']} · {record['optimizer']} · {record['arm']} · seed {record['seed']}: "
                f"{record['status']}[/] {record.get('message', '')}"
            )

    board = WorkerBoard(progress)
    try:
        with progress:
            executor.run(todo, on_trial, on_progress, on_worker=board.update)
            progress.update(task, completed=n_todo)  # fractional progress can fall a hair short of the total
    except KeyboardInterrupt:
        interrupted = True
        console.print(f"[yellow]Interrupted: {len(done)} finished trial(s) kept in {log.path}; rerun with --out {out_dir} to resume.[/]")

    results = build_results(
        suite_name, suite_path, plan, done, partial=interrupted or len(done) < len(plan), description=description
    )
    atomic_write_text(out_dir / "results.json", dumps(results, indent=1))
    outcome = RunOutcome(results, out_dir, ran=ran, skipped=len(finished.keys() & planned_ids), interrupted=interrupted)
    if write_report:
        from telebench.render.markdown import write_report as render

        outcome.report_path = render(results, out_dir)
    return outcome
