"""Sequential execution in this process: the default, and the reference for timing."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import torch

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
        host, pid = socket.gethostname(), os.getpid()
        for specs in pairs:
            started = time.time()
            records = run_pair_safely(specs, self.data_root, on_progress)
            finished = time.time()
            for record in records:  # the same provenance fields the process and Ray executors write
                record.update(host=host, worker=pid, executor=self.name, attempt=1)
                record.setdefault("timing", {}).update(
                    threads=torch.get_num_threads(), pair_started_unix=started, pair_finished_unix=finished
                )
                on_trial(record)
