"""The `train` kind: paired training runs of teleport arms and controls against a baseline.

Its unit is a trial (one arm of one case, optimizer, device and seed); its task is a pair, all arms
that share initial weights and batches, trained interleaved in one worker (DESIGN.md §4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from telebench.analysis.verdicts import ALPHA
from telebench.config.overrides import Overrides
from telebench.experiments.pairs.load import resolve_suite
from telebench.experiments.pairs.plan import Plan, expand, group_pairs, trials_of
from telebench.experiments.pairs.schema import Suite
from telebench.experiments.pairs.spec import TrialSpec
from telebench.experiments.pairs.task import run_pair
from telebench.experiments.pairs.tuning import (
    TUNING,
    annotate_summary,
    choose,
    is_resolved,
    is_tuning,
    tuning_rows,
)
from telebench.experiments.pairs.view import render_plan, render_validate
from telebench.training.precheck import check_datasets


class PairsExperiment:
    kind = "train"
    journal_name = "results.jsonl"
    journal_key = None
    timed = True
    run_task = staticmethod(run_pair)

    def load(self, path: Path, raw: dict[str, Any], overrides: Overrides, *, check_devices: bool) -> Suite:
        return resolve_suite(path, raw, overrides, check_devices)

    def show(self, config: Suite, console: Console, *, plan: bool) -> None:
        (render_plan if plan else render_validate)(config, expand(config), console)

    def plan(self, config: Suite | Plan) -> list[list[TrialSpec]]:
        return group_pairs(trials_of(config))

    def prelude(self, config: Suite | Plan) -> list[list[TrialSpec]]:
        """The tuning trials of a `tune_lr` suite: the compared trials' lr depends on them (see tuning.py)."""
        if not isinstance(config, Suite) or is_resolved(config):
            return []
        return group_pairs(_tuning_specs(config))

    def resolve(self, config: Suite | Plan, records: Mapping[str, dict[str, Any]]) -> Suite | Plan | None:
        """The suite with the tuned lrs chosen from the tuning trials' records (None while one is unfinished)."""
        if not isinstance(config, Suite):
            return config
        return choose(config, _tuning_specs(config), records)

    def precheck(self, config: Suite | Plan, plan: Sequence[Sequence[TrialSpec]], data_root: str | None) -> None:
        """Load each distinct dataset of the plan once up front, so missing files stop the run before any training."""
        check_datasets((trial.dataset for task in plan for trial in task), data_root)

    def default_threads(self, config: Suite | Plan) -> int | None:
        return 1  # steady timings for small models: more threads made them slower and erratic on 2 busy cores

    def summarise(self, config: Suite | Plan, records: Sequence[dict[str, Any]], partial: bool) -> dict[str, Any]:
        from telebench.analysis.summary import (  # scipy: only once there are results
            analyse,
            resolve_targets,
        )

        declared = config.analysis.record() if isinstance(config, Suite) else {"primary_metric": "time_to_target"}
        trials = resolve_targets([r for r in records if not is_tuning(r)])  # tuning trials are never compared
        analysis, summary = analyse(trials, {**declared, "alpha": ALPHA})  # with the declared comparisons' rows
        if not isinstance(config, Suite) or not any(case.tune_lr is not None for case in config.cases):
            return {"analysis": analysis, "trials": trials, "summary": summary}
        rows = tuning_rows(config, _tuning_specs(config), {r["id"]: r for r in records if is_tuning(r)})
        return {"analysis": analysis, "trials": trials, "summary": annotate_summary(summary, rows), "tuning": rows}

    def write_report(self, results: dict[str, Any], out_dir: Path) -> Path:
        from telebench.render.markdown import write_report  # matplotlib: only when a report is drawn

        return write_report(results, out_dir)

    def render_terminal(self, results: dict[str, Any], console: Console) -> None:
        from telebench.render.terminal import render_terminal
        from telebench.render.tuning import render_tuning

        render_terminal(results, console)
        render_tuning(results, console)


def _tuning_specs(config: Suite) -> list[TrialSpec]:
    return [t for t in expand(config) if t.role == TUNING]


EXPERIMENT = PairsExperiment()
