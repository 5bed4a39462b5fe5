"""A network of a study as a unit of work for the shared executors, and its journal line.

A network is identified by its case's settings (`case_key`, a hash of everything but the count of
networks) and its seed; its `id` hashes the two, so a rerun into the same folder skips it, and a
case whose settings changed trains afresh. Lines of ``networks.jsonl`` written before the id
existed carry `case_key` and `seed`, from which `journal_id` derives the same id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from telebench.execution.task import ProgressFn
from telebench.experiments.correlation.schema import StudyCase
from telebench.experiments.correlation.train import NetworkRecord, train_network

JOURNAL = "networks.jsonl"
FINISHED = ("ok", "diverged")  # a network record's statuses; an executor's "error" record is retried
_RECORD_FIELDS = tuple(f.name for f in fields(NetworkRecord))


def case_key(case: StudyCase) -> str:
    """A hash of everything that determines a case's networks except the count of them."""
    blob = json.dumps({k: v for k, v in case.describe().items() if k not in ("networks", "seeds")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def network_id(key: str, seed: int) -> str:
    """The stable id of the network `seed` of the case whose settings hash to `key`."""
    return hashlib.sha256(f"{key}:{int(seed)}".encode()).hexdigest()[:16]


def journal_id(record: dict[str, Any]) -> str:
    """The id of a journal line, also of one written without an id (KeyError when it cannot have one)."""
    return network_id(str(record["case_key"]), int(record["seed"]))


@dataclass
class NetworkUnit:
    """One network to train: what an executor schedules and a worker process receives (picklable).
    Not frozen, because the executors' `Unit` protocol declares `device` and `noun` as plain attributes."""

    case: StudyCase
    seed: int
    key: str  # case_key(case)
    device: str = "cpu"
    noun: str = "network"

    @classmethod
    def of(cls, case: StudyCase, seed: int) -> NetworkUnit:
        return cls(case, seed, case_key(case))

    @property
    def id(self) -> str:
        return network_id(self.key, self.seed)

    def label(self) -> str:
        return f"{self.case.name} · seed {self.seed}"

    def task_label(self) -> str:
        return self.label()

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case.name, "seed": self.seed, "case_key": self.key}

    def error_fields(self) -> dict[str, Any]:
        return self.to_dict()


def journal_line(record: NetworkRecord, key: str) -> dict[str, Any]:
    """A network's line in ``networks.jsonl``: the record, its gap, its case's key and its id."""
    return {**record.to_dict(), "case_key": key, "id": network_id(key, record.seed)}


def network_record(line: dict[str, Any]) -> NetworkRecord:
    """The NetworkRecord of a journal line or executor record (the fields it does not know are dropped)."""
    return NetworkRecord(**{k: line[k] for k in _RECORD_FIELDS if k in line})


def run_networks(units: list[NetworkUnit], data_root: str | None, progress: ProgressFn | None = None
                 ) -> list[dict[str, Any]]:
    """The study's `UnitRunner`: train and measure each network, one journal line each."""
    out = []
    for unit in units:
        out.append(journal_line(train_network(unit.case, unit.seed, data_root), unit.key))
        if progress is not None:
            progress(unit, 1.0)
    return out
