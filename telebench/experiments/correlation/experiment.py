"""The `correlation` kind: do sharpness and curvature of trained networks predict their validation loss?

Its unit and its task are one network (a case's settings and a seed): trained, then measured at the
end, untimed, so workers may share the machine. The journal is networks.jsonl; lines written before
units had ids get theirs from their case key and seed, so old output folders resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from telebench.config.overrides import Overrides
from telebench.errors import UserError
from telebench.experiments.correlation.report import case_results, render_terminal, write_report
from telebench.experiments.correlation.schema import Study, resolve_study
from telebench.experiments.correlation.unit import (
    FINISHED,
    JOURNAL,
    NetworkUnit,
    journal_id,
    network_record,
    run_networks,
)
from telebench.experiments.correlation.view import render_study
from telebench.training.precheck import check_datasets

_TRAIN_ONLY = {"seeds": "--seeds", "arms": "--arms", "budget_steps": "--budget-steps", "eval_every": "--eval-every"}


class CorrelationExperiment:
    kind = "correlation"
    journal_name = JOURNAL
    journal_key = staticmethod(journal_id)
    timed = False
    run_task = staticmethod(run_networks)

    def load(self, path: Path, raw: dict[str, Any], overrides: Overrides, *, check_devices: bool) -> Study:
        for field, flag in _TRAIN_ONLY.items():
            if getattr(overrides, field) is not None:
                raise UserError(f"{flag} does not apply to a correlation study ({path}); use --networks or --cases.")
        if overrides.devices not in (None, ["cpu"]):
            raise UserError(f"--devices: a correlation study ({path}) trains on the CPU; drop --devices or pass cpu.")
        return resolve_study(path, raw, overrides.networks, overrides.cases)

    def show(self, config: Study, console: Console, *, plan: bool) -> None:
        render_study(config, console, plan=plan)

    def plan(self, config: Study) -> list[list[NetworkUnit]]:
        return [[NetworkUnit.of(case, seed)] for case in config.cases for seed in case.seeds]

    def precheck(self, config: Study, plan: Sequence[Sequence[NetworkUnit]], data_root: str | None) -> None:
        check_datasets((case.dataset for case in config.cases), data_root)

    def default_threads(self, config: Study) -> int | None:
        return None  # torch's own count here; a pool's workers share the cores among them

    def summarise(self, config: Study, records: Sequence[dict[str, Any]], partial: bool) -> dict[str, Any]:
        networks = [network_record(r) for r in records if r.get("status") in FINISHED]
        return {"cases": case_results(config, networks)}

    def write_report(self, results: dict[str, Any], out_dir: Path) -> Path:
        return write_report(results, out_dir)

    def render_terminal(self, results: dict[str, Any], console: Console) -> None:
        render_terminal(results, console)


EXPERIMENT = CorrelationExperiment()
