"""Tuned baselines (`tune_lr`): each optimizer's lr is chosen on the calibration seeds before any compared run.

A sceptic's point: with an under-tuned baseline (Adam at a tiny lr), a teleport that restarts the optimizer
may win only by acting as a larger step. With `tune_lr`, every case × optimizer first runs baseline-only
*tuning* trials (`role: "tuning"`) on the case's calibration seeds and first device, at the written lr × each
grid factor, with the case's budget. The lr whose median metric over those seeds is lowest (ties: the
smaller lr) is chosen, and every calibration and compared trial of that optimizer then trains with it.

The compared trials' lr is part of their spec hash, so a tuned suite runs in two stages: the runner runs
the tuning trials first (the Experiment's `prelude`), `choose` resolves the lrs from their records
(`Case.tuned_lr`), and only then is the rest planned. Both stages share one journal, so a rerun skips
finished tuning trials and, as the choice is a plain function of their records, makes the same choice.

The choice is made only from a complete set: a tuning trial that errored leaves the optimizer unresolved
(the run stops after the first stage, partial, and a rerun retries it). A diverged trial counts as an
infinitely bad metric; a skipped one (say, no CUDA) does not count.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from telebench.experiments.pairs.schema import Case, OptimizerConfig, Suite, TuneLRConfig
from telebench.experiments.pairs.spec import TrialSpec

TUNING = "tuning"
COUNTED = ("ok", "diverged")  # statuses whose metric counts; "skipped" does not, "error" must be retried


def grid_lrs(tune: TuneLRConfig, lr: float) -> list[tuple[float, float]]:
    """(factor, lr) for each grid factor, smallest first; lrs rounded to 12 significant digits for stable ids."""
    return [(factor, float(f"{factor * lr:.12g}")) for factor in tune.grid]


def tuning_trials(case: Case, opt: OptimizerConfig, template: TrialSpec) -> list[TrialSpec]:
    """The baseline-only tuning trials of one case × optimizer, seed-major (one task per calibration seed)."""
    if case.tune_lr is None:
        return []
    arm = next((a.name for a in case.arms if a.kind == "baseline"), "baseline")
    return [replace(template, arm=arm, arm_kind="baseline", teleport=None, seed=seed, role=TUNING,
                    optimizer=replace(template.optimizer, lr=lr))
            for seed in case.calibration_seeds for _, lr in grid_lrs(case.tune_lr, opt.lr)]


def is_tuning(record: Mapping[str, Any]) -> bool:
    spec = record.get("spec")
    return isinstance(spec, Mapping) and spec.get("role") == TUNING


def _metric(record: Mapping[str, Any], metric: str) -> float:
    if record.get("status") == "diverged":
        return math.inf
    value = record.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return math.inf
    return float(value)


def _score(specs: Sequence[TrialSpec], records: Mapping[str, Mapping[str, Any]], metric: str
           ) -> tuple[float | None, int, int, bool]:
    """(median over the counted seeds, or None with none; seeds counted; seeds diverged; every trial finished)."""
    found = [records.get(s.id) for s in specs]
    complete = all(r is not None and r.get("status") in (*COUNTED, "skipped") for r in found)
    counted = [r for r in found if r is not None and r.get("status") in COUNTED]
    values = [_metric(r, metric) for r in counted]
    diverged = sum(1 for r in counted if r.get("status") == "diverged")
    return (statistics.median(values) if values else None), len(values), diverged, complete


def tuning_row(case: Case, opt: OptimizerConfig, specs: Iterable[TrialSpec],
               records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One case × optimizer's tuning result: each grid lr's median metric and n, and the chosen lr.

    `chosen_lr` is None until every tuning trial has finished; with no counted trial at all (every one
    skipped), the written lr is kept (`kept_written: true`)."""
    assert case.tune_lr is not None
    mine = [s for s in specs if s.role == TUNING and s.case == case.name and s.optimizer_label == opt.label]
    grid, complete, best = [], True, None
    for factor, lr in grid_lrs(case.tune_lr, opt.lr):
        median, n, diverged, done = _score([s for s in mine if s.optimizer.lr == lr], records, case.tune_lr.metric)
        complete = complete and done
        grid.append({"factor": factor, "lr": lr, "median": median, "n": n, "diverged": diverged})
        if median is not None and (best is None or median < best[0]):  # ties keep the smaller lr (seen first)
            best = (median, factor, lr)
    chosen = (best[2] if best is not None else opt.lr) if complete else None
    factors = [g["factor"] for g in grid]
    edge = best is not None and complete and best[1] in (factors[0], factors[-1])
    return {"case": case.name, "optimizer": str(opt.label), "metric": case.tune_lr.metric, "written_lr": opt.lr,
            "seeds": list(case.calibration_seeds), "device": case.devices[0], "grid": grid, "chosen_lr": chosen,
            "chosen_factor": best[1] if best is not None and complete else None,
            "kept_written": complete and best is None, "complete": complete, "edge": edge}


def tuning_rows(suite: Suite, specs: Sequence[TrialSpec], records: Mapping[str, Mapping[str, Any]]
                ) -> list[dict[str, Any]]:
    """The tuning result of every tuned case × optimizer, in suite order (results.json `tuning`)."""
    return [tuning_row(case, opt, specs, records)
            for case in suite.cases if case.tune_lr is not None for opt in case.optimizers]


def choose(suite: Suite, specs: Sequence[TrialSpec], records: Mapping[str, Mapping[str, Any]]) -> Suite | None:
    """The suite with each tuned case's `tuned_lr` filled in, or None while a tuning trial is unfinished."""
    rows = tuning_rows(suite, specs, records)
    if not all(row["complete"] for row in rows):
        return None
    chosen: dict[str, dict[str, float]] = {}
    for row in rows:
        chosen.setdefault(row["case"], {})[row["optimizer"]] = float(row["chosen_lr"])
    cases = [case.model_copy(update={"tuned_lr": chosen[case.name]}) if case.name in chosen else case
             for case in suite.cases]
    return suite.model_copy(update={"cases": cases})


def is_resolved(suite: Suite) -> bool:
    """Whether every tuned case has its lrs chosen (an untuned suite always is)."""
    return all(case.tune_lr is None or case.tuned_lr for case in suite.cases)


def annotate_summary(summary: list[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each summary row of a tuned optimizer gains `tuned_lr`, the lr its trials trained with."""
    lrs = {(r["case"], r["optimizer"]): r["chosen_lr"] for r in rows if r["chosen_lr"] is not None}
    return [{**row, "tuned_lr": lrs[key]} if (key := (row.get("case"), row.get("optimizer"))) in lrs else row
            for row in summary]
