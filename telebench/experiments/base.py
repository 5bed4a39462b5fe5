"""The Experiment protocol: what every kind of experiment supplies so one runner can run it.

A kind is a plugin, as benchopt's Objective/Dataset/Solver are: it reads its own YAML schema into a
validated config, plans that config into tasks of units (an arm of a pair, a network of a study,
a meta-learning case), runs one task with a module-level `UnitRunner` (so any executor can ship it
to a worker), and summarises the finished unit records into a results dict. The shared runner
(`telebench.experiments.runner`) does everything else the same way for every kind: the output
folder and its lock, the journal and resume by unit id, the executor, the progress display, the
atomic results.json and the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from rich.console import Console

from telebench.config.overrides import Overrides
from telebench.execution.task import ProgressFn, Unit


@dataclass(frozen=True)
class RunRequest:
    """What `telebench run` asks of any kind, beyond its suite: where, with what and how."""

    out_dir: Path
    data_root: str | None = None
    executor: str | None = None  # None: the suite's own choice, else local
    jobs: int | None = None
    address: str | None = None
    allow_shared_device: bool = False
    threads: int | None = None  # torch threads per task; None: the kind's default
    report: bool = True
    first_stage_only: bool = False  # `--tune-only`: a Staged kind stops after its prelude (tuning)


@dataclass
class RunOutcome:
    """What a run left behind; `interrupted` means Ctrl-C or SIGTERM stopped it with finished units kept."""

    results: dict[str, Any]
    out_dir: Path
    ran: int
    skipped: int
    interrupted: bool = False
    report_path: Path | None = None
    warnings: list[str] = field(default_factory=list)


class Loaded(Protocol):
    """A validated config of any kind: its name, where it came from, and notes for the user."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def source(self) -> Path | str: ...

    @property
    def notes(self) -> Sequence[str]: ...


C = TypeVar("C", contravariant=True)  # the kind's validated config


class Experiment(Protocol[C]):
    """One kind of experiment over its config type C. Every method but `run_task` runs in the parent process."""

    kind: str  # the YAML `kind:` value and the results file's `kind`
    journal_name: str  # the journal file in the output folder (results.jsonl for `train`)

    @property
    def journal_key(self) -> Callable[[dict[str, Any]], str] | None:
        """The id of a journal line written without one (older files), or None: such lines are skipped."""
        ...
    timed: bool  # whether tasks are timed (then a device runs one task at a time)

    def run_task(self, units: list[Any], data_root: str | None, progress: ProgressFn | None) -> list[dict[str, Any]]:
        """Train one task in a worker; a staticmethod over a module-level function, so that it pickles."""
        ...

    def load(self, path: Path, raw: dict[str, Any], overrides: Overrides, *, check_devices: bool) -> Any:
        """Validate the YAML (with --set already applied); one UserError sentence on any problem."""
        ...

    def show(self, config: C, console: Console, *, plan: bool) -> None:
        """What `validate` (plan=False) or `list` (plan=True) prints."""
        ...

    def plan(self, config: C) -> Sequence[Sequence[Unit]]:
        """The tasks in run order; the units of a task run together in one worker."""
        ...

    def precheck(self, config: C, plan: Sequence[Sequence[Any]], data_root: str | None) -> None:
        """Fail before any training when something the planned tasks need (data files) is missing."""
        ...

    def default_threads(self, config: C) -> int | None:
        """torch threads per task when `--threads` is not given (None: torch's, or the executor's share)."""
        ...

    def summarise(self, config: C, records: Sequence[dict[str, Any]], partial: bool) -> dict[str, Any]:
        """The results dict (without schema, kind, environment and times, which the runner adds)."""
        ...

    def write_report(self, results: dict[str, Any], out_dir: Path) -> Path:
        """Write report.md (and its plots) from a results dict alone, so `telebench report` can redo it."""
        ...

    def render_terminal(self, results: dict[str, Any], console: Console) -> None:
        """The summary table printed after a run and by `telebench report`."""
        ...


@runtime_checkable
class Staged(Protocol):
    """An optional hook for a kind whose plan depends on results of its own (the train kind's `tune_lr`).

    The runner first runs `prelude(config)` (skipping units the journal holds), then plans
    `resolve(config, records)` as usual; that plan may list the prelude's units again (they are skipped).
    `records` maps unit ids to their latest records, finished or not. When `resolve` returns None (a
    prelude unit failed), the run stops after the prelude with partial results, and a rerun retries it.
    """

    def prelude(self, config: Any) -> Sequence[Sequence[Unit]]:
        """The tasks whose records the rest of the plan depends on; empty when there are none."""
        ...

    def resolve(self, config: Any, records: Mapping[str, dict[str, Any]]) -> Any | None:
        """The config with the prelude's results applied, or None when they do not suffice yet."""
        ...
