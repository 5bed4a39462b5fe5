"""`--executor process --jobs N`: pairs in a pool of spawned worker processes on this machine.

Timing stays honest by admission, not by luck: while pairs are timed, the parent starts a pair
only when its device is idle, so a device never runs two timed pairs at once. A plan whose pairs
all use one device (the CPU, say) then runs one pair at a time, in a single worker that gets every
core. `allow_shared_device=True` (or untimed work, `timed=False`) lifts the rule and fills all N
workers; every record then says `timing.shared_device = true`.

Each worker uses `available_cpus() // workers` torch threads. A pair whose worker process dies is
rerun once, alone, so a pair that kills its worker cannot take an innocent neighbour down with it
on the retry; a second death records its arms as `error`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from telebench.errors import UserError
from telebench.execution.base import TrialCallback, WorkerCallback, available_cpus, device_key
from telebench.execution.task import ProgressFn, Unit, UnitRunner
from telebench.execution.tracking import DeviceGate, PairTracker
from telebench.execution.worker import PairTask, init_pool_worker, run_pool_task

log = logging.getLogger("telebench.execution")

POLL_S = 0.1  # how often the parent reads worker progress while it waits for results


@dataclass
class ProcessExecutor:
    runner: UnitRunner  # trains one task; see telebench.execution.task
    data_root: str | None = None
    jobs: int | None = None  # worker processes; None: one per available core
    allow_shared_device: bool = False  # let timed pairs share a device (timings marked shared)
    timed: bool = True  # False for untimed work (correlation studies, meta-training): fill every worker
    threads: int | None = None  # torch threads per worker; None: available cores // workers
    name: str = "process"

    def __post_init__(self) -> None:
        if self.jobs is not None and self.jobs < 1:
            raise UserError(f"--jobs {self.jobs}: the number of worker processes must be at least 1.")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads {self.threads}: torch threads per worker must be at least 1.")

    @property
    def exclusive(self) -> bool:
        return self.timed and not self.allow_shared_device

    def workers_for(self, pairs: list[list[Unit]]) -> int:
        """Exclusive devices cap useful concurrency at the number of distinct devices in the plan."""
        jobs = self.jobs or available_cpus()
        if not self.exclusive:
            return jobs
        return max(1, min(jobs, len({device_key(p[0].device) for p in pairs})))

    def run(
        self,
        pairs: list[list[Unit]],
        on_trial: TrialCallback,
        on_progress: ProgressFn | None,
        on_worker: WorkerCallback | None = None,
    ) -> None:
        if not pairs:
            return
        workers = self.workers_for(pairs)
        if self.jobs and workers < self.jobs:
            log.warning(
                "--jobs %d: the plan's timed pairs use %d device(s), and a device runs one timed pair at a time, "
                "so %d worker(s) run; pass --allow-shared-device to run more side by side (timings marked shared).",
                self.jobs, workers, workers,
            )
        threads = self.threads or max(1, available_cpus() // workers)
        tracker = PairTracker(pairs, on_trial, on_progress, on_worker)
        _PoolRun(self, pairs, tracker, workers, threads).run()


class _PoolRun:
    """One execution of a plan: the pool, the admission queue and the recovery from dead workers."""

    def __init__(self, ex: ProcessExecutor, pairs: list[list[Unit]], tracker: PairTracker, workers: int, threads: int):
        self.ex, self.pairs, self.tracker = ex, pairs, tracker
        self.workers, self.threads = workers, threads
        self.gate = DeviceGate(ex.exclusive)
        self.ctx = mp.get_context("spawn")  # fork is unsafe with torch threads and CUDA
        self.events = self.ctx.Queue()
        self.pool = self._new_pool()
        self.waiting: deque[int] = deque(range(len(pairs)))
        self.suspects: deque[int] = deque()  # pairs whose worker died (or that shared a dying pool)
        self.retried: set[int] = set()
        self.inflight: dict[Future, int] = {}
        self.started = 0  # workers of the current pool that finished start-up

    def _new_pool(self) -> ProcessPoolExecutor:
        self.started = 0
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self.ctx,
            initializer=init_pool_worker,
            initargs=(self.threads, self.events),
        )

    def _key(self, index: int) -> str:
        return device_key(self.pairs[index][0].device)

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while self.waiting or self.suspects or self.inflight:
                broken = self._submit_ready()
                if self.inflight:
                    done, _ = wait(self.inflight, timeout=POLL_S, return_when=FIRST_COMPLETED)
                    self._drain_events()
                    broken = self._collect(done) or broken
                if broken:
                    self._replace_pool()
        except BaseException:
            self._abort()
            raise
        self.pool.shutdown(wait=True)
        self._close_events()

    def _submit_ready(self) -> bool:
        """Start what may start now; True if the pool turned out broken."""
        index: int | None
        if self.suspects:  # a retry after a worker death runs alone
            if not self.inflight:
                index = self.suspects.popleft()
                self.retried.add(index)
                return self._submit(index, attempt=2)
            return False
        while len(self.inflight) < self.workers:
            index = next((i for i in self.waiting if self.gate.free(self._key(i))), None)
            if index is None:
                break
            self.waiting.remove(index)
            if self._submit(index, attempt=1):
                return True
        return False

    def _submit(self, index: int, attempt: int) -> bool:
        task = PairTask(
            index=index,
            specs=tuple(self.pairs[index]),
            runner=self.ex.runner,
            data_root=self.ex.data_root,
            threads=self.threads,
            shared_device=not self.ex.exclusive,
            executor=self.ex.name,
            attempt=attempt,
        )
        try:
            future = self.pool.submit(run_pool_task, task)
        except BrokenProcessPool:  # a worker died between our last look and this submit
            (self.suspects if attempt == 2 else self.waiting).appendleft(index)
            return True
        self.gate.acquire(self._key(index))
        self.inflight[future] = index
        return False

    def _collect(self, done: set[Future]) -> bool:
        """Hand finished pairs over; True if any future reports a dead worker."""
        broken = False
        for future in done:
            index = self.inflight.pop(future)
            self.gate.release(self._key(index))
            try:
                outcome = future.result()
            except BrokenProcessPool as exc:
                broken = True
                worker = self.tracker.lost(index)
                if index in self.retried:
                    self.tracker.fail(index, f"its worker process died on both attempts ({exc})", worker)
                else:
                    self.suspects.append(index)
                continue
            except Exception as exc:  # e.g. a record that would not pickle; the run goes on
                self.tracker.fail(index, f"{type(exc).__name__}: {exc}")
                continue
            if outcome.user_error is not None:
                raise UserError(outcome.user_error)
            self.tracker.deliver(outcome)
        return broken

    def _replace_pool(self) -> None:
        """A dead worker breaks the whole pool: settle every in-flight pair, then start a fresh pool."""
        if self.inflight:
            done, _ = wait(self.inflight)  # a broken pool fails all its futures promptly
            self._collect(done)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._drain_events()
        if not self.started:
            raise UserError(
                "--executor process: worker processes die while starting, before any pair ran; run telebench "
                "from its command line, or guard your script's entry point with `if __name__ == '__main__':`."
            )
        self.pool = self._new_pool()

    # ---- events and shutdown ------------------------------------------------------------------
    def _drain_events(self) -> None:
        while True:
            try:
                message: tuple[Any, ...] = self.events.get_nowait()
            except queue.Empty:
                return
            self.started += message[0] == "hello"
            self.tracker.event(message)

    def _abort(self) -> None:
        """Ctrl-C or a user error: keep finished pairs, cancel queued ones, end this run's own workers."""
        try:
            self._drain_events()
            for future, _index in list(self.inflight.items()):
                if future.done() and not future.cancelled() and future.exception() is None:
                    outcome = future.result()
                    if outcome.user_error is None:
                        self.tracker.deliver(outcome)
        finally:
            self._end_workers()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._close_events()

    def _end_workers(self) -> None:
        """SIGTERM to this pool's own worker processes: a pair already running would not stop otherwise."""
        terminate = getattr(self.pool, "terminate_workers", None)  # Python 3.14+
        if terminate is not None:
            terminate()
            return
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):
            if process.is_alive():
                process.terminate()

    def _close_events(self) -> None:
        self.events.close()
        self.events.join_thread()
