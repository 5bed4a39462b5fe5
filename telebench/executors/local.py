"""Sequential execution in this process: the default, and the reference for timing."""

from __future__ import annotations

from dataclasses import dataclass

from telebench.executors.base import TrialCallback, WorkerCallback, run_pair_safely
from telebench.spec import TrialSpec
from telebench.training.loop import ProgressFn


@dataclass
class LocalExecutor:
    data_root: str | None = None
    name: str = "local"

    def run(
        self,
        pairs: list[list[TrialSpec]],
        on_trial: TrialCallback,
        on_progress: ProgressFn | None,
        on_worker: WorkerCallback | None = None,  # one worker (this process): the main bar says it all
    ) -> None:
        for specs in pairs:
            for record in run_pair_safely(specs, self.data_root, on_progress):
                on_trial(record)
