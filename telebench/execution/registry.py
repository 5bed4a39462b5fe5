"""Executors by name, with option checking: the one place `--executor` is read."""

from __future__ import annotations

import dataclasses
from typing import Any

from telebench.errors import UserError
from telebench.execution.base import Executor
from telebench.execution.local import LocalExecutor
from telebench.execution.process import ProcessExecutor
from telebench.execution.ray_executor import RayExecutor
from telebench.execution.task import UnitRunner

EXECUTORS: dict[str, type] = {"local": LocalExecutor, "process": ProcessExecutor, "ray": RayExecutor}


def get_executor(name: str, runner: UnitRunner, **options: Any) -> Executor:
    """Build the executor `name` with its options; options it does not take are dropped when None
    (the CLI passes every flag), and rejected with a clear message otherwise."""
    if name not in EXECUTORS:
        raise UserError(f"--executor {name!r} is unknown; choose one of {', '.join(sorted(EXECUTORS))}.")
    cls = EXECUTORS[name]
    accepted = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k, v in options.items() if k not in accepted and v not in (None, False))
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise UserError(f"{flags} does not apply to --executor {name}; drop it or choose another executor.")
    return cls(runner=runner, **{k: v for k, v in options.items() if k in accepted})
