"""The `meta` kind: meta-learned optimizers that learn the update, where to teleport, or both.

Its unit and its task are one case: every arm of a case is meta-trained, then all arms are tested
interleaved seed by seed, so a case must run whole in one worker. A finished case is journaled,
so an interrupted suite resumes at the first unfinished case.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from telebench.config.overrides import Overrides
from telebench.execution.task import ProgressFn
from telebench.experiments.meta.run import run_case
from telebench.experiments.meta.suite import MetaCase, MetaSuite, load_meta_suite
from telebench.experiments.meta.view import render_meta_plan, render_meta_validate
from telebench.render.meta import write_report


@dataclass(frozen=True, eq=False)
class MetaUnit:
    """One case of a meta suite as the executors see it."""

    suite: str
    case: MetaCase
    device: str = "cpu"
    noun: ClassVar[str] = "case"

    @property
    def id(self) -> str:
        blob = json.dumps({"suite": self.suite, "case": self.case.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "case": self.case.model_dump(mode="json")}

    def label(self) -> str:
        return f"{self.case.name} (meta-training {len(self.case.arms)} arms)"

    def task_label(self) -> str:
        return self.case.name

    def error_fields(self) -> dict[str, Any]:
        return {"name": self.case.name, "arms": []}


def run_meta_task(units: list[MetaUnit], data_root: str | None, progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """The meta kind's `UnitRunner`: meta-train and test each case; one record per case."""
    records = []
    for unit in units:
        record = {"id": unit.id, "status": "ok", **run_case(unit.case)}
        if progress is not None:
            progress(unit, 1.0)
        records.append(record)
    return records


class MetaExperiment:
    kind = "meta"
    journal_name = "cases.jsonl"
    journal_key = None
    timed = True  # its test runs are timed, so a device runs one case at a time
    run_task = staticmethod(run_meta_task)

    def load(self, path: Path, raw: dict[str, Any], overrides: Overrides, *, check_devices: bool) -> MetaSuite:
        return load_meta_suite(path, raw, overrides)

    def show(self, config: MetaSuite, console: Console, *, plan: bool) -> None:
        (render_meta_plan if plan else render_meta_validate)(config, console)

    def plan(self, config: MetaSuite) -> list[list[MetaUnit]]:
        return [[MetaUnit(config.name, case)] for case in config.cases]

    def precheck(self, config: MetaSuite, plan: Sequence[Sequence[MetaUnit]], data_root: str | None) -> None:
        """Meta tasks sample their data from the task spec's own datasets, loaded inside each case."""

    def default_threads(self, config: MetaSuite) -> int | None:
        return config.threads  # null: torch's own count

    def summarise(self, config: MetaSuite, records: Sequence[dict[str, Any]], partial: bool) -> dict[str, Any]:
        keep = ("id", "status")
        return {"cases": [{k: v for k, v in r.items() if k not in keep} for r in records if r.get("status") == "ok"]}

    def write_report(self, results: dict[str, Any], out_dir: Path) -> Path:
        return write_report(results, out_dir)

    def render_terminal(self, results: dict[str, Any], console: Console) -> None:
        """A meta suite's findings are its report's tables and plots; the terminal gets the case count and
        the verdicts."""
        from telebench.analysis.meta_verdicts import verdicts
        from telebench.render.meta import arm_label

        console.print(f"{len(results['cases'])} meta case(s) finished.", highlight=False)
        for r in verdicts(results["cases"], arm_label):
            p = "" if r["p_value"] is None else f", p {r['p_value']:.2g} → {r['p_adjusted']:.2g} (Holm)"
            console.print(f"{r['case']}: {r['arm']} vs {r['against']}: {r['verdict']} (arm lower on {r['lower']} of "
                          f"{r['n_pairs']} seeds{p})", highlight=False)


EXPERIMENT = MetaExperiment()
