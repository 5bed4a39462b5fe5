"""Executors run the pairs of a plan and hand each finished trial record back as it completes.

A pair (all arms of one case, optimizer, device and seed) is the unit of work: its arms must
share a machine and run interleaved, so their timings stay comparable.

- `local`: sequential, in this process (the timing reference).
- `process`: a pool of spawned worker processes on this machine (`jobs`, `allow_shared_device`).
- `ray`: one Ray task per pair on a local or remote Ray cluster (`address`); needs `telebench[ray]`.
"""

from __future__ import annotations

from telebench.executors.base import (
    Executor,
    TrialCallback,
    WorkerCallback,
    WorkerStatus,
    error_records,
    run_pair_safely,
)
from telebench.executors.local import LocalExecutor
from telebench.executors.process import ProcessExecutor
from telebench.executors.ray_executor import RayExecutor

EXECUTORS: dict[str, type] = {"local": LocalExecutor, "process": ProcessExecutor, "ray": RayExecutor}


def get_executor(name: str, **options) -> Executor:
    """Build the executor `name` with its options; options it does not take are dropped when None
    (the CLI passes every flag), and rejected with a clear message otherwise."""
    import dataclasses

    from telebench.errors import UserError

    if name not in EXECUTORS:
        raise UserError(f"--executor {name!r} is unknown; choose one of {', '.join(sorted(EXECUTORS))}.")
    cls = EXECUTORS[name]
    accepted = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k, v in options.items() if k not in accepted and v not in (None, False))
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise UserError(f"{flags} does not apply to --executor {name}; drop it or choose another executor.")
    return cls(**{k: v for k, v in options.items() if k in accepted})


__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "TrialCallback",
    "WorkerCallback",
    "WorkerStatus",
    "error_records",
    "get_executor",
    "run_pair_safely",
]
