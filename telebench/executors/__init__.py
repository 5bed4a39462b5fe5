"""Executors run the pairs of a plan and hand each finished trial record back as it completes.

A pair (all arms of one case, optimizer, device and seed) is the unit of work: its arms must
share a machine and run interleaved, so their timings stay comparable.
"""

from __future__ import annotations

from telebench.executors.base import Executor, TrialCallback, error_records, run_pair_safely
from telebench.executors.local import LocalExecutor

EXECUTORS = {"local": LocalExecutor}


def get_executor(name: str, **options) -> Executor:
    from telebench.errors import UserError

    if name not in EXECUTORS:
        raise UserError(f"--executor {name!r} is unknown; choose one of {', '.join(sorted(EXECUTORS))}.")
    return EXECUTORS[name](**options)


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "TrialCallback", "error_records", "get_executor", "run_pair_safely"]
