"""The worker side of the parallel executors: run one pair in a worker process and describe it.

A pool worker or a Ray task receives a picklable `PairTask`, trains the pair with
the task's runner, and returns a `PairOutcome` whose records say where and how they were measured
(host, worker pid, per-trial environment, thread count, whether the device was shared). Live
progress goes back through an `EventSink` as small tuples, because callbacks cannot cross processes.
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from telebench.errors import UserError
from telebench.execution.base import run_task_safely
from telebench.execution.task import Unit, UnitRunner

PR_SET_PDEATHSIG = 1  # linux/prctl.h

# Event tuples a worker sends while it runs (the parent's tracker reads them):
#   ("start", pair_index, host, pid)        a worker began a pair
#   ("progress", pair_index, spec_id, delta) an arm advanced by `delta` of its budget


class EventSink(Protocol):
    def put(self, item: Any) -> None: ...


@dataclass(frozen=True)
class PairTask:
    index: int  # position in the executor's list of pairs
    specs: tuple[Unit, ...]
    runner: UnitRunner  # module-level, so the task pickles
    data_root: str | None
    threads: int  # torch intra-op threads for this pair
    shared_device: bool  # whether another pair may have run on the same device meanwhile
    executor: str
    attempt: int = 1  # 2 when the pair is rerun after its worker process died


@dataclass
class PairOutcome:
    index: int
    host: str
    pid: int
    records: list[dict[str, Any]] = field(default_factory=list)
    user_error: str | None = None  # a UserError stops the whole run, as it does with the local executor


def execute_pair(task: PairTask, events: EventSink | None = None, extra: dict[str, Any] | None = None) -> PairOutcome:
    """Train one pair here and return its stamped records; `extra` fields are added to each record."""
    from telebench.results.environment import environment

    host, pid = socket.gethostname(), os.getpid()
    torch.set_num_threads(task.threads)
    if events is not None:
        events.put(("start", task.index, host, pid))

    def progress(spec: Unit, delta: float) -> None:
        if events is not None:
            events.put(("progress", task.index, spec.id, delta))

    started = time.time()
    try:
        records = run_task_safely(task.runner, list(task.specs), task.data_root, progress)
    except UserError as exc:
        return PairOutcome(task.index, host, pid, user_error=str(exc))
    finished = time.time()
    env = environment(sorted({s.device for s in task.specs}))
    for record in records:
        record.update(host=host, worker=pid, executor=task.executor, attempt=task.attempt, environment=env)
        record.update(extra or {})
        timing = record.setdefault("timing", {})
        timing.update(
            shared_device=task.shared_device,
            threads=task.threads,
            pair_started_unix=started,
            pair_finished_unix=finished,
        )
    return PairOutcome(task.index, host, pid, records)


# ---- process-pool workers ------------------------------------------------------------------------
_EVENTS: EventSink | None = None  # set once per pool worker by `init_pool_worker`


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux `PR_SET_PDEATHSIG`), so a parent
    killed outright (SIGKILL, the OOM killer, a crash) never leaves a worker training under PID 1; and exit
    now if the parent is already gone. Elsewhere this does nothing: the parent's own handlers end workers."""
    parent = mp.parent_process()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl (an odd libc): fall back on the parent's handlers
            pass
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl took effect
        os._exit(1)


def init_pool_worker(threads: int, events: EventSink) -> None:
    """Pool initializer. Ctrl-C goes to the parent alone, which ends its workers itself; a terminal's
    SIGINT would otherwise reach every worker of the process group and break the pool mid-trial. A worker
    dies with its parent, however the parent ends (see `die_with_parent`)."""
    global _EVENTS
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _EVENTS = events
    atexit.register(_skip_interpreter_teardown)
    events.put(("hello", -1, socket.gethostname(), os.getpid()))


def _skip_interpreter_teardown() -> None:
    """Runs first at a pool worker's exit, after multiprocessing has flushed its queues. Tearing down
    the thousands of modules torch loads costs about 1.5 s of CPU per worker, which the parent would
    wait for at every pool shutdown; the pool reads no exit codes, so end the process here."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_pool_task(task: PairTask) -> PairOutcome:
    return execute_pair(task, _EVENTS)
