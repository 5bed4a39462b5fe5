"""What the executors know of the work they run: units with an id and a device, and a runner.

Execution sits below the experiment kinds, so it never imports them. A kind hands the executor
its units (the arms of a pair, say) grouped into tasks that must run together, and a picklable
module-level `UnitRunner` that trains one task and returns one record per unit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Unit(Protocol):
    """One recorded piece of work (a trial); its id is a content hash, so a rerun skips it."""

    @property
    def device(self) -> str: ...

    @property
    def noun(self) -> str:
        """What one unit is called in progress rows: "arm", "network", "case"."""
        ...

    @property
    def id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def label(self) -> str:
        """A short name for progress lines, e.g. "digits · sgd · teleport · seed 0"."""
        ...

    def task_label(self) -> str:
        """A short name of the task this unit belongs to, for the per-worker rows."""
        ...

    def error_fields(self) -> dict[str, Any]:
        """The kind's own fields of a record for this unit when it produced none (case, arm, seed, ...)."""
        ...


ProgressFn = Callable[[Any, float], None]  # (unit, fraction of its budget just done)
UnitRunner = Callable[[list[Any], "str | None", "ProgressFn | None"], list[dict[str, Any]]]
