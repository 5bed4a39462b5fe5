"""The train kind's task runner, importable without torch: the executors pickle it by name."""

from __future__ import annotations

from typing import Any

from telebench.execution.task import ProgressFn
from telebench.experiments.pairs.spec import TrialSpec


def run_pair(specs: list[TrialSpec], data_root: str | None, progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """The train kind's `UnitRunner`: train the arms of one pair side by side and return their records."""
    from telebench.experiments.pairs.loop import PairRunner  # torch: only where training happens

    return PairRunner(specs, data_root=data_root, progress=progress).run()
