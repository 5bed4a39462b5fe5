"""`telebench run SUITE --replicate K`: rerun a train suite's primary comparisons on K fresh seeds.

1. The original: `<out>/results.json` when it holds every trial the suite plans; otherwise the suite runs
   first, into `<out>` (resuming what its journal holds), as a plain `telebench run` would.
2. The comparisons (`telebench.analysis.replication.primary_rows`): the pre-registered ones, else every
   `teleport` arm against the baseline.
3. The seeds: the K smallest non-negative integers used nowhere so far, neither by the suite (its seeds
   and calibration seeds) nor by any unit recorded in `<out>` or in any `<out>/replication-<n>/`.
4. The run: the same suite narrowed to the cases, optimizers, devices and arms the comparisons need, on
   the fresh seeds, with the calibration baselines its target needs (their seeds are the original's, so
   the target is defined as it was), each tuned optimizer at the lr the original's tuning chose (no tuning
   trial runs again; the report's tuning table is the original's), and those comparisons declared, so
   Holm runs over them alone. It goes
   through the one runner into `<out>/replication-<n>/` (n = 1, 2, ...: replications accumulate), which
   also writes its own results.json and report.md.
5. The verdict: replication.md (and replication.json) beside them, and a table on the terminal.

An interrupted replication (its folder has replication.json but no replication.md) resumes on its own
seeds when the next `--replicate` asks for as many; otherwise its seeds count as used and a new folder
starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from telebench.analysis.replication import judge, primary_rows
from telebench.errors import UserError
from telebench.execution.journal import Journal
from telebench.experiments.base import Experiment, RunOutcome, RunRequest, Staged
from telebench.experiments.pairs.experiment import PairsExperiment
from telebench.experiments.pairs.schema import AnalysisConfig, ComparisonConfig, Suite
from telebench.experiments.pairs.spec import TrialSpec
from telebench.experiments.pairs.tuning import TUNING, annotate_summary
from telebench.experiments.runner import run_experiment
from telebench.render.load import ensure_summary
from telebench.render.replication import render_markdown, render_terminal
from telebench.results.schema import load_results
from telebench.results.store import atomic_write_text, dumps

PLAN_NAME = "replication.json"
REPORT_NAME = "replication.md"
_FOLDER = re.compile(r"replication-([1-9][0-9]*)")


class _Narrowed(PairsExperiment):
    """The train kind with its plan narrowed to the trials a replication needs; the one runner runs it.
    A tuned suite keeps the original's tuned lrs (`tuning`: its results' rows), so no tuning reruns."""

    def __init__(self, needed: set[tuple[str, str, str, str]], tuning: list[dict[str, Any]] | None = None) -> None:
        self.needed = needed  # (case, optimizer label, device, arm) of the compared trials to run
        self.tuning = tuning or []

    def summarise(self, config: Any, records: Any, partial: bool) -> dict[str, Any]:
        out = dict(super().summarise(config, records, partial))
        if self.tuning:  # the lrs were chosen by the original run's tuning trials, not by any of this run's
            out["tuning"] = self.tuning
            out["summary"] = annotate_summary(out["summary"], self.tuning)
        return out

    def plan(self, config: Any) -> list[list[TrialSpec]]:
        keep = [[t for t in task if t.role == "calibration"
                 or (t.case, t.optimizer_label, t.device, t.arm) in self.needed] for task in super().plan(config)]
        return [task for task in keep if task]


def replicate(exp: Experiment[Any], config: Any, request: RunRequest, k: int, console: Console) -> RunOutcome:
    """Run the original if needed, then a replication into the next `replication-<n>/`; see the module doc."""
    if exp.kind != "train" or not isinstance(config, Suite):
        raise UserError(f"--replicate: {config.source} is a `kind: {exp.kind}` suite; only train suites have "
                        "paired comparisons to replicate.")
    out = request.out_dir
    results = _complete_results(exp, config, out)
    if results is None:
        console.print(f"[dim]{out} holds no complete results of {config.name}: running the suite first.[/]")
        first = run_experiment(exp, config, request, console)
        exp.render_terminal(first.results, console)
        console.print(f"results: {out / 'results.json'}", highlight=False)
        if first.interrupted:
            return first
        results = ensure_summary(first.results)
    rows = primary_rows(results)
    if not rows:
        raise UserError(f"--replicate: {out / 'results.json'} has no comparison to replicate (no pre-registered "
                        "comparison ran, and no `teleport` arm was compared with a baseline).")
    n, seeds, used = _next_replication(exp, config, out, k)
    folder = out / f"replication-{n}"
    record = {"replication": n, "suite": config.name, "out": str(out), "seeds": seeds, "used_seeds": used,
              "declared": bool((results.get("analysis") or {}).get("primary_comparisons")),
              "primary_metric": (results.get("analysis") or {}).get("primary_metric") or "time_to_target",
              "comparisons": [{f: r[f] for f in ("case", "optimizer", "device", "arm", "against")} for r in rows]}
    _write(folder / PLAN_NAME, dumps(record, indent=1))
    console.print(f"[bold]Replication {n}[/] of {len(rows)} comparison(s) on seeds {seeds} into {folder}")
    narrowed, suite = _narrowed(config, rows, seeds, n, results.get("tuning") or [])
    outcome = run_experiment(narrowed, suite, replace(request, out_dir=folder), console)
    if outcome.interrupted:
        return outcome
    record["comparisons"] = judge(rows, (outcome.results.get("analysis") or {}).get("preregistered") or [])
    record["report"] = outcome.report_path is not None
    _write(folder / PLAN_NAME, dumps(record, indent=1))
    _write(folder / REPORT_NAME, render_markdown(record))
    render_terminal(record, console)
    console.print(f"replication: {folder / REPORT_NAME}", highlight=False)
    return outcome


def _complete_results(exp: Experiment[Any], config: Suite, out: Path) -> dict[str, Any] | None:
    """`<out>/results.json`, summary recomputed, when it holds a record of every trial the suite plans."""
    path = out / "results.json"
    if not path.is_file():
        return None
    try:
        results = load_results(path, kind="train")
    except UserError:
        return None
    have = {t.get("id") for t in results.get("trials") or [] if isinstance(t, dict)}
    if results.get("suite") != config.name:
        return None
    resolved: Any = config
    if isinstance(exp, Staged) and exp.prelude(config):  # a tuned suite: its compared lrs come from the journal
        resolved = exp.resolve(config, {r["id"]: r for r in Journal(out, exp.journal_name).records() if "id" in r})
        if resolved is None:
            return None
    planned = [u for task in exp.plan(resolved) for u in task if getattr(u, "role", None) != TUNING]
    if any(u.id not in have for u in planned):  # tuning trials never enter results.json's trials
        return None
    return ensure_summary(results)


def _folders(out: Path) -> dict[int, Path]:
    if not out.is_dir():
        return {}
    return {int(m.group(1)): p for p in out.iterdir() if p.is_dir() and (m := _FOLDER.fullmatch(p.name))}


def _next_replication(exp: Experiment[Any], config: Suite, out: Path, k: int) -> tuple[int, list[int], list[int]]:
    """The replication's number, its seeds and the seeds used before it."""
    folders = _folders(out)
    last = max(folders, default=0)
    used = {s for case in config.cases for s in (*case.seeds, *case.calibration_seeds)}
    for folder in (out, *folders.values()):
        used |= _recorded_seeds(exp, folder)
    if last and not (folders[last] / REPORT_NAME).exists():  # an interrupted replication: resume it
        planned = _read_plan(folders[last]).get("seeds") or []
        if len(planned) == k and all(isinstance(s, int) for s in planned):
            return last, list(planned), sorted(used - set(planned))
    fresh: list[int] = []
    seed = 0
    while len(fresh) < k:
        if seed not in used:
            fresh.append(seed)
        seed += 1
    return last + 1, fresh, sorted(used)


def _recorded_seeds(exp: Experiment[Any], folder: Path) -> set[int]:
    """Every seed a results.json, the journal or a replication plan in `folder` mentions."""
    records = list(Journal(folder, exp.journal_name).records())
    if (folder / "results.json").is_file():
        try:
            records += load_results(folder / "results.json").get("trials") or []
        except UserError:
            pass
    seeds = {r.get("seed") for r in records if isinstance(r, dict)}
    seeds |= set(_read_plan(folder).get("seeds") or [])
    return {s for s in seeds if isinstance(s, int) and not isinstance(s, bool)}


def _read_plan(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / PLAN_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _narrowed(config: Suite, rows: list[dict[str, Any]], seeds: list[int], n: int,
              tuning: list[dict[str, Any]]) -> tuple[_Narrowed, Suite]:
    """The suite cut down to what the comparisons need, on the fresh seeds, the comparisons declared,
    and each tuned optimizer at the lr the original's tuning chose (`tuned_lr`: its prelude is then empty)."""
    needed = {(r["case"], r["optimizer"], r["device"], arm) for r in rows for arm in (r["arm"], r["against"])}
    chosen: dict[str, dict[str, float]] = {}
    for row in tuning:
        if row.get("chosen_lr") is not None:
            chosen.setdefault(str(row["case"]), {})[str(row["optimizer"])] = float(row["chosen_lr"])
    cases = []
    for case in config.cases:
        mine = {key for key in needed if key[0] == case.name}
        if not mine:
            continue
        arms = {key[3] for key in mine} | {a.name for a in case.arms if a.kind == "baseline"}  # calibration
        cases.append(case.model_copy(update={
            "seeds": list(seeds),
            "optimizers": [o for o in case.optimizers if any(key[1] == o.label for key in mine)],
            "devices": [d for d in case.devices if any(key[2] == d for key in mine)],
            "arms": [a for a in case.arms if a.name in arms],
            **({"tuned_lr": chosen[case.name]} if case.tune_lr is not None and case.name in chosen else {}),
        }))
    declared = list(dict.fromkeys((r["case"], r["optimizer"], r["arm"], r["against"]) for r in rows))
    analysis = AnalysisConfig(primary_metric=config.analysis.primary_metric, primary_comparisons=[
        ComparisonConfig(case=c, optimizer=o, arm=a, against=b) for c, o, a, b in declared])
    description = f"Replication {n} of {config.name} on fresh seeds {seeds}. {config.description}".strip()
    suite = config.model_copy(update={"cases": cases, "analysis": analysis, "notes": [], "description": description})
    kept = [row for row in tuning if row.get("case") in {c.name for c in cases}]
    return _Narrowed(needed, kept), suite


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text)
