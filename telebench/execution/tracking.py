"""The parent side of the parallel executors: device admission and turning worker news into callbacks.

`DeviceGate` decides which pair may start: with timed pairs, a device (or a Ray node's CPU) runs
one pair at a time, because two timed pairs on one device measure each other. `PairTracker`
receives worker events and finished pairs and calls the runner's `on_trial`, `on_progress` and
`on_worker`, all in the parent process, each trial exactly once.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from telebench.execution.base import TrialCallback, WorkerCallback, WorkerStatus, error_records
from telebench.execution.task import ProgressFn, Unit
from telebench.execution.worker import PairOutcome


@dataclass
class DeviceGate:
    """Admission control: an exclusive gate lets one pair at a time hold each key (a device, a node)."""

    exclusive: bool
    busy: set[Hashable] = field(default_factory=set)

    def free(self, key: Hashable) -> bool:
        return not self.exclusive or key not in self.busy

    def acquire(self, key: Hashable) -> None:
        if self.exclusive:
            if key in self.busy:
                raise RuntimeError(f"device {key!r} is already running a timed pair")
            self.busy.add(key)

    def release(self, key: Hashable) -> None:
        self.busy.discard(key)


class PairTracker:
    """Delivers each pair's records once and keeps per-trial progress and per-worker status."""

    def __init__(
        self,
        pairs: list[list[Unit]],
        on_trial: TrialCallback,
        on_progress: ProgressFn | None,
        on_worker: WorkerCallback | None,
    ) -> None:
        self.pairs = pairs
        self.on_trial = on_trial
        self.on_progress = on_progress
        self.on_worker = on_worker
        self.specs = {s.id: s for pair in pairs for s in pair}
        self.reported = dict.fromkeys(self.specs, 0.0)  # fraction of each trial's budget shown so far
        self.delivered: set[int] = set()
        self.workers: dict[tuple[str, int], WorkerStatus] = {}
        self.running_on: dict[int, tuple[str, int]] = {}  # pair index -> worker running it

    # ---- worker events ------------------------------------------------------------------------
    def event(self, message: tuple[Any, ...]) -> None:
        kind, index = message[0], message[1]
        if kind == "hello":
            self._set((message[2], message[3]))
        elif kind == "start" and index not in self.delivered:
            worker = (message[2], message[3])
            self.running_on[index] = worker
            self._set(worker, running=tuple(self.pairs[index]))
        elif kind == "progress" and index not in self.delivered:
            self._advance(self.specs[message[2]], message[3])

    def lost(self, index: int) -> tuple[str, int] | None:
        """The worker running pair `index` died (returned, if known); the caller retries or fails the pair."""
        worker = self.running_on.pop(index, None)
        if worker is not None:
            self._set(worker, running=(), alive=False)
        return worker

    # ---- finished pairs -----------------------------------------------------------------------
    def deliver(self, outcome: PairOutcome) -> None:
        if outcome.index in self.delivered:
            return
        self._hand_over(outcome.index, outcome.records)
        worker = (outcome.host, outcome.pid)
        previous = self.workers.get(worker)
        self._set(worker, running=(), finished=(previous.finished if previous else 0) + len(outcome.records))

    def fail(self, index: int, message: str, worker: tuple[str, int] | None = None) -> None:
        """Record every arm of pair `index` as an error that no worker could report itself."""
        records = error_records(self.pairs[index], message)
        for record in records:
            record["host"], record["worker"] = worker if worker is not None else (None, None)
        self._hand_over(index, records)

    def _hand_over(self, index: int, records: list[dict[str, Any]]) -> None:
        self.delivered.add(index)
        self.running_on.pop(index, None)
        for record in records:
            spec = self.specs[record["id"]]
            self._advance(spec, 1.0 - self.reported[spec.id])  # progress events may lag or be lost
            self.on_trial(record)

    # ---- helpers ------------------------------------------------------------------------------
    def _advance(self, spec: Unit, delta: float) -> None:
        delta = min(delta, 1.0 - self.reported[spec.id])
        if delta <= 0:
            return
        self.reported[spec.id] += delta
        if self.on_progress is not None:
            self.on_progress(spec, delta)

    def _set(self, worker: tuple[str, int], **changes: Any) -> None:
        status = self.workers.get(worker) or WorkerStatus(host=worker[0], pid=worker[1])
        status = replace(status, **changes)
        self.workers[worker] = status
        if self.on_worker is not None:
            self.on_worker(status)
