"""The one runner of every experiment kind: plan → journal → executor → results.json → report.

Finished units are appended to the kind's journal as they arrive, so Ctrl-C, SIGTERM or a crash
keeps them and a rerun into the same folder skips them by id. results.json and report.md are
rewritten atomically at the end (or on interruption, marked partial). One run holds the output
folder's lock; a second run into it refuses.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from telebench.errors import UserError
from telebench.execution.board import WorkerBoard
from telebench.execution.journal import FINISHED_STATUSES, Journal, lock
from telebench.execution.registry import get_executor
from telebench.execution.task import Unit
from telebench.experiments.base import Experiment, Loaded, RunOutcome, RunRequest, Staged
from telebench.render.progress import progress_bar
from telebench.results.environment import environment
from telebench.results.schema import PAYLOAD, header
from telebench.results.store import WriteError, atomic_write_text, dumps, now_iso, prepare_out_dir


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
        plan = exp.plan(config)
        exp.precheck(config, plan, request.data_root)
        journal = Journal(out, exp.journal_name, key=exp.journal_key)
        finished = journal.finished()
        warnings = list(journal.warnings)
        for warning in warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        started, clock = now_iso(), time.perf_counter()
        done: dict[str, dict[str, Any]] = {}
        config, plan, ran, interrupted = _run_stages(exp, config, request, plan, journal, finished, done, console)
        planned = [u.id for task in plan for u in task]
        if interrupted:
            console.print(f"[yellow]Interrupted: {len(done)} finished unit(s) kept in {journal.path}; "
                          f"rerun with --out {request.out_dir} to resume.[/]")
        results = {
            **header(exp.kind, config.name, str(config.source), config.description),
            "started": started,
            "created": now_iso(),
            "wall_seconds": time.perf_counter() - clock,
            "partial": interrupted or any(done.get(i, {}).get("status") not in FINISHED_STATUSES for i in planned),
            "environment": environment(sorted({u.device for task in plan for u in task})),
            **_payload(exp, config, [done[i] for i in planned if i in done], finished, set(planned), interrupted,
                       journal, console),
        }
        _write_results(out, results, journal)
        outcome = RunOutcome(results, out, ran=ran, skipped=len(finished.keys() & set(planned)),
                             interrupted=interrupted, warnings=warnings)
        if request.report:
            outcome.report_path = _write_report(exp, results, out)
    return outcome


def _run_stages(exp: Experiment, config: Loaded, request: RunRequest, plan: Sequence[Sequence[Unit]],
                journal: Journal, finished: dict[str, dict[str, Any]], done: dict[str, dict[str, Any]],
                console: Console) -> tuple[Any, Sequence[Sequence[Unit]], int, bool]:
    """The plan, or a `Staged` kind's prelude and then the plan it resolves to; returns (config, the plan that
    ran, units run, interrupted). `done` collects the records of every unit of the stages that ran."""
    if not isinstance(exp, Staged) or not (first := exp.prelude(config)):
        ran, interrupted = _run_stage(exp, config, request, plan, journal, finished, done, console)
        return config, plan, ran, interrupted
    ran, interrupted = _run_stage(exp, config, request, first, journal, finished, done, console)
    if request.first_stage_only:
        return config, first, ran, interrupted
    resolved = None if interrupted else exp.resolve(config, done)
    if resolved is None:
        if not interrupted:
            console.print(f"[yellow]The first stage of {escape(config.name)} left units unfinished, and the rest of "
                          f"its plan depends on them, so it did not run; rerun with --out {request.out_dir} to retry "
                          "them.[/]", highlight=False)
        return config, first, ran, interrupted
    plan = exp.plan(resolved)
    more, interrupted = _run_stage(exp, resolved, request, plan, journal, finished, done, console)
    return resolved, plan, ran + more, interrupted


def _run_stage(exp: Experiment, config: Loaded, request: RunRequest, plan: Sequence[Sequence[Unit]],
               journal: Journal, finished: dict[str, dict[str, Any]], done: dict[str, dict[str, Any]],
               console: Console) -> tuple[int, bool]:
    """Run the units of `plan` that neither an earlier run nor an earlier stage finished; returns (run, interrupted)."""
    recorded = len(journal.records())  # lines before this stage; its own come after them
    skipped = [u.id for task in plan for u in task if u.id in finished and u.id not in done]
    done.update((i, finished[i]) for i in skipped)
    todo = [[u for u in task if done.get(u.id, {}).get("status") not in FINISHED_STATUSES] for task in plan]
    todo = [task for task in todo if task]
    if skipped:
        n_todo = sum(map(len, todo))
        console.print(f"[dim]Resuming in {request.out_dir}: {len(skipped)} finished unit(s) skipped, {n_todo} to run.[/]")
    ran, interrupted = _execute(exp, config, request, todo, journal, done, console)
    # The journal, not the callback, is what was kept: an interrupt can land between a unit's journal
    # line and the callback's bookkeeping, and every journaled unit belongs in results.json.
    done.update((r["id"], r) for r in journal.records()[recorded:])
    return ran, interrupted


def _suite_of(record: dict[str, Any]) -> str | None:
    spec = record.get("spec")
    suite = record.get("suite", spec.get("suite") if isinstance(spec, dict) else None)
    return suite if isinstance(suite, str) else None


def _payload(exp: Experiment, config: Loaded, records: list[dict[str, Any]], finished: dict[str, dict[str, Any]],
             planned: set[str], partial: bool, journal: Journal, console: Console) -> dict[str, Any]:
    """The kind's results over the plan, plus the units of the same suite that earlier runs recorded in this
    folder and this plan leaves out (a narrower --seeds), so a rerun never shrinks results.json silently."""
    payload = dict(exp.summarise(config, records, partial))
    earlier = {i: r for i, r in finished.items() if i not in planned and _suite_of(r) == config.name}
    others = sorted({s for r in finished.values() if (s := _suite_of(r)) not in (None, config.name)})
    key = PAYLOAD.get(exp.kind)
    if earlier and key is not None and isinstance(payload.get(key), list):
        try:
            everything = exp.summarise(config, records + list(earlier.values()), partial).get(key) or []
        except Exception as exc:  # earlier lines of another telebench version, say: never lose this run for them
            console.print(f"[yellow]warning:[/] earlier units in {journal.path} left out of results.json "
                          f"({escape(type(exc).__name__)}: {escape(str(exc))}).", highlight=False)
            everything = []
        kept = [item for item in everything if isinstance(item, dict) and item.get("id") in earlier]
        if kept:
            payload[key] = payload[key] + kept
            console.print(f"[yellow]note:[/] results.json also keeps {len(kept)} earlier unit(s) of suite "
                          f"{escape(config.name)!r} from {journal.path} that this run's plan leaves out; its summary "
                          f"covers the {len(planned)} planned unit(s) only.", highlight=False)
    if others:
        console.print(f"[yellow]note:[/] {journal.path} also holds units of other suites ({escape(', '.join(others))}), "
                      "which this results.json leaves out; give each suite its own --out.", highlight=False)
    return payload


def _write_results(out: Path, results: dict[str, Any], journal: Journal) -> None:
    try:
        atomic_write_text(out / "results.json", dumps(results, indent=1))
    except WriteError as exc:
        raise UserError(f"{exc.path}: cannot be written ({exc.reason}); every finished unit is kept in "
                        f"{journal.path} and any earlier results.json is unchanged, so free some space and rerun "
                        f"with --out {out} to resume.") from None


def _write_report(exp: Experiment, results: dict[str, Any], out: Path) -> Path:
    try:
        return exp.write_report(results, out)
    except OSError as exc:
        raise UserError(f"{out}: the report cannot be written ({exc.strerror or exc}); results.json is complete, so "
                        f"free some space and run `telebench report {out / 'results.json'}`.") from None


def executor_choice(named: str | None, jobs: int | None) -> tuple[str, int | None]:
    """The executor and worker count a run uses: `--jobs N` alone (no executor named on the command line
    or in the suite) means a process pool when N > 1, and the plain local run when N is 1."""
    if named is None:
        named = "process" if (jobs or 1) > 1 else "local"
    return named, (None if named == "local" and jobs == 1 else jobs)


def _execute(exp: Experiment, config: Loaded, request: RunRequest, todo: list[list[Unit]], journal: Journal,
             done: dict[str, dict[str, Any]], console: Console) -> tuple[int, bool]:
    """Run the outstanding tasks, journaling each finished unit; returns (units run, interrupted)."""
    threads = request.threads or exp.default_threads(config)
    name, jobs = executor_choice(request.executor or getattr(config, "executor", None), request.jobs)
    options: dict[str, Any] = {"jobs": jobs, "address": request.address,
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
        return ran, True
    finally:
        torch.set_num_threads(before)
    return ran, False
