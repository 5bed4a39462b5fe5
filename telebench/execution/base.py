"""What every executor shares: the interface and crash-proof execution of one task (a pair of arms, say)."""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from telebench.execution.task import ProgressFn, Unit, UnitRunner

TrialCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class WorkerStatus:
    """What one worker process (a pool worker or a Ray worker) is doing, for a per-worker display."""

    host: str
    pid: int
    running: tuple[Unit, ...] = ()  # the arms of the pair it trains now; empty when idle
    finished: int = 0  # trials it has handed back in this run
    alive: bool = True  # False once the process died (its pair is retried elsewhere)

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"


WorkerCallback = Callable[[WorkerStatus], None]


class Executor(Protocol):
    name: str

    runner: UnitRunner  # trains one task (a pair's arms); a module-level function, so it pickles

    def run(
        self,
        pairs: list[list[Unit]],
        on_trial: TrialCallback,
        on_progress: ProgressFn | None,
        on_worker: WorkerCallback | None = None,
    ) -> None:
        """Run every pair; call `on_trial` once per finished trial, in the caller's process.

        `on_progress(spec, delta)` advances a trial by a fraction of its budget; `on_worker` (optional)
        hears whenever a worker starts a pair, finishes one or dies. A KeyboardInterrupt cancels the
        outstanding pairs and propagates, after every trial already handed to `on_trial`."""
        ...


def available_cpus() -> int:
    """Cores this process may use (the affinity mask, which containers and `taskset` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def device_key(device: str) -> str:
    """One name per physical device, so `cuda` and `cuda:0` count as the same device."""
    name = device.strip().lower()
    if name == "auto":
        import torch

        name = "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda:0" if name == "cuda" else name


def error_records(specs: list[Unit], message: str, tb: str | None = None) -> list[dict[str, Any]]:
    """Trial records for arms that never produced results (a crash before or around training)."""
    return [
        {
            "id": s.id,
            **s.error_fields(),
            "device": s.device,
            "spec": s.to_dict(),
            "status": "error",
            "message": message,
            "traceback": tb,
            "host": socket.gethostname(),
        }
        for s in specs
    ]


def run_task_safely(
    runner: UnitRunner, specs: list[Unit], data_root: str | None, progress: ProgressFn | None = None, retries: int = 1
) -> list[dict[str, Any]]:
    """Run one task; units that error are retried `retries` times, then recorded as `error`."""
    from telebench.errors import UserError

    pending = list(specs)
    done: dict[str, dict[str, Any]] = {}
    for _attempt in range(retries + 1):
        try:
            records = runner(pending, data_root, progress)
        except UserError:
            raise
        except Exception as exc:  # the whole pair failed (data, model construction, ...)
            records = error_records(pending, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=8))
        for rec in records:
            rec.setdefault("host", socket.gethostname())
            done[rec["id"]] = rec
        pending = [s for s in pending if done[s.id]["status"] == "error"]
        if not pending:
            break
    return [done[s.id] for s in specs]
