"""What every executor shares: the interface and crash-proof execution of one pair."""

from __future__ import annotations

import socket
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from telebench.spec import TrialSpec
from telebench.training.loop import PairRunner, ProgressFn

TrialCallback = Callable[[dict[str, Any]], None]


class Executor(Protocol):
    name: str

    def run(self, pairs: list[list[TrialSpec]], on_trial: TrialCallback, on_progress: ProgressFn | None) -> None:
        """Run every pair; call `on_trial` once per finished trial, in the caller's process."""
        ...


def error_records(specs: list[TrialSpec], message: str, tb: str | None = None) -> list[dict[str, Any]]:
    """Trial records for arms that never produced results (a crash before or around training)."""
    return [
        {
            "id": s.id,
            "case": s.case,
            "arm": s.arm,
            "arm_kind": s.arm_kind,
            "optimizer": s.optimizer_label,
            "seed": s.seed,
            "device": s.device,
            "spec": s.to_dict(),
            "status": "error",
            "message": message,
            "traceback": tb,
            "host": socket.gethostname(),
            "history": [],
            "teleports": [],
        }
        for s in specs
    ]


def run_pair_safely(
    specs: list[TrialSpec], data_root: str | None, progress: ProgressFn | None = None, retries: int = 1
) -> list[dict[str, Any]]:
    """Run one pair; arms that error are retried `retries` times, then recorded as `error`."""
    from telebench.errors import UserError

    pending = list(specs)
    done: dict[str, dict[str, Any]] = {}
    for _attempt in range(retries + 1):
        try:
            records = PairRunner(pending, data_root=data_root, progress=progress).run()
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
