"""Sequential execution in this process: the default, and the reference for timing."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import torch

from telebench.execution.base import TrialCallback, WorkerCallback, run_task_safely
from telebench.execution.task import ProgressFn, Unit, UnitRunner


@dataclass
class LocalExecutor:
    runner: UnitRunner  # trains one task; see telebench.execution.task
    data_root: str | None = None
    name: str = "local"

    def run(
        self,
        pairs: list[list[Unit]],
        on_trial: TrialCallback,
        on_progress: ProgressFn | None,
        on_worker: WorkerCallback | None = None,  # one worker (this process): the main bar says it all
    ) -> None:
        host, pid = socket.gethostname(), os.getpid()
        for specs in pairs:
            started = time.time()
            records = run_task_safely(self.runner, specs, self.data_root, on_progress)
            finished = time.time()
            for record in records:  # the same provenance fields the process and Ray executors write
                record.update(host=host, worker=pid, executor=self.name, attempt=1)
                record.setdefault("timing", {}).update(
                    threads=torch.get_num_threads(), pair_started_unix=started, pair_finished_unix=finished
                )
                on_trial(record)
