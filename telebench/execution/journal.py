"""The append-only journal of finished work in an output folder: resume by spec hash."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from telebench.results.store import dumps

FINISHED_STATUSES = ("ok", "diverged", "skipped")  # "error" trials are retried on a rerun


class TrialLog:
    """The append-only `results.jsonl` of one output folder."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / "results.jsonl"

    def finished(self) -> dict[str, dict[str, Any]]:
        """Trials already done, by id (the last record of an id wins; errors are not 'done')."""
        done: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return done
        with self.path.open() as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write; the trial simply reruns
                if rec.get("status") in FINISHED_STATUSES:
                    done[rec["id"]] = rec
                else:
                    done.pop(rec.get("id"), None)
        return done

    def append(self, trial: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(dumps(trial) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


