"""Tuned baselines (`tune_lr`): tuning trials in the plan, the lr they choose, compared trials that use it,
resume across both stages, and the report's "Tuned learning rates" table."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from telebench.errors import UserError
from telebench.experiments.base import RunOutcome, RunRequest
from telebench.experiments.pairs.experiment import EXPERIMENT, PairsExperiment
from telebench.experiments.pairs.load import load_suite
from telebench.experiments.pairs.plan import expand
from telebench.experiments.pairs.spec import TrialSpec
from telebench.experiments.pairs.task import run_pair
from telebench.experiments.pairs.tuning import choose, tuning_rows
from telebench.experiments.runner import run_experiment
from telebench.render.markdown import render_markdown

SUITE: dict[str, Any] = {
    "name": "tuned",
    "defaults": {"budget": {"steps": 20}, "eval_every": 10, "seeds": [0, 1], "calibration_seeds": [100, 101],
                 "arms": ["baseline", "teleport"], "teleport": {"steps": 2, "batch_size": 64},
                 "tune_lr": {"grid": [0.1, 1, 10]}},
    "cases": [{"name": "digits", "dataset": {"name": "digits"}, "model": {"widths": [64, 8, 10], "activation": "relu"},
               "optimizers": [{"name": "sgd", "lr": 0.01}]}],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread: None) -> None:
    """Bit-identical trajectories need one fixed reduction order."""


def write(folder: Path, **defaults: Any) -> Path:
    doc = {**SUITE, "defaults": {**SUITE["defaults"], **defaults}}
    doc["defaults"] = {k: v for k, v in doc["defaults"].items() if v is not None}
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(path: Path, out: Path) -> RunOutcome:
    console = Console(file=io.StringIO(), width=200)
    return run_experiment(EXPERIMENT, load_suite(path), RunRequest(out_dir=out), console)


def journal(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, RunOutcome]:
    folder = tmp_path_factory.mktemp("tuned")
    path, out = write(folder), folder / "out"
    return path, out, run(path, out)


# ---- the plan -------------------------------------------------------------------------------------


def test_the_plan_holds_a_tuning_trial_per_grid_lr_and_calibration_seed_and_old_ids_stay(tmp_path: Path) -> None:
    plan = expand(load_suite(write(tmp_path)))
    tuning = [t for t in plan if t.role == "tuning"]
    assert sorted((t.seed, t.optimizer.lr) for t in tuning) == [(s, lr) for s in (100, 101) for lr in (0.001, 0.01, 0.1)]
    assert {(t.arm_kind, t.teleport, t.device, t.budget.value) for t in tuning} == {("baseline", None, "cpu", 20.0)}
    untuned = expand(load_suite(write(tmp_path, tune_lr=None)))
    assert [t.id for t in plan if t.role != "tuning"] == [t.id for t in untuned]  # before tuning: the written lr
    assert len({t.id for t in plan}) == len(plan)
    assert EXPERIMENT.prelude(load_suite(write(tmp_path, tune_lr=None))) == []
    assert [len(task) for task in EXPERIMENT.prelude(load_suite(write(tmp_path)))] == [3, 3]  # one task per seed


def test_tuning_needs_calibration_seeds_and_a_grid_without_repeats(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"defaults\.tune_lr: tuning the learning rates needs calibration seeds.*"
                                        r"calibration_seeds: \[100, 101, 102\]"):
        load_suite(write(tmp_path, calibration_seeds=[], target={"value": 0.5}))
    with pytest.raises(UserError, match=r"tune_lr\.grid.*repeat"):
        load_suite(write(tmp_path, tune_lr={"grid": [1, 1]}))
    case = load_suite(write(tmp_path, tune_lr=True)).cases[0]
    assert case.tune_lr is not None and case.tune_lr.grid == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert case.tune_lr.metric == "final_train_loss"


def _records(tuning: list[TrialSpec], values: dict[tuple[float, int], Any]) -> dict[str, dict[str, Any]]:
    """Fake tuning records: a number is an ok trial's final train loss, a string its status."""
    out = {}
    for t in tuning:
        value = values[(t.optimizer.lr, t.seed)]
        status = value if isinstance(value, str) else "ok"
        out[t.id] = {"id": t.id, "status": status, "final_train_loss": None if isinstance(value, str) else value,
                     "spec": t.to_dict()}
    return out


def test_the_chosen_lr_is_the_argmin_of_the_median_with_ties_to_the_smaller_lr(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, calibration_seeds=[100, 101, 102]))
    tuning = [t for t in expand(suite) if t.role == "tuning"]
    # medians: 0.001 → 2.0, 0.01 → 1.0 (one diverged seed counts as +inf, not as missing), 0.1 → 1.5
    values = {(0.001, 100): 2.0, (0.001, 101): 2.0, (0.001, 102): 2.0,
              (0.01, 100): 0.5, (0.01, 101): 1.0, (0.01, 102): "diverged",
              (0.1, 100): 1.5, (0.1, 101): 1.5, (0.1, 102): "skipped"}
    row = tuning_rows(suite, tuning, _records(tuning, values))[0]
    assert [(g["median"], g["n"], g["diverged"]) for g in row["grid"]] == [(2.0, 3, 0), (1.0, 3, 1), (1.5, 2, 0)]
    assert (row["chosen_lr"], row["chosen_factor"], row["edge"]) == (0.01, 1.0, False)
    resolved = choose(suite, tuning, _records(tuning, values))
    assert resolved is not None and resolved.cases[0].tuned_lr == {"sgd": 0.01}
    compared = [t for t in expand(resolved) if t.role != "tuning"]
    assert {t.optimizer.lr for t in compared} == {0.01}
    assert [t.id for t in expand(resolved) if t.role == "tuning"] == [t.id for t in tuning]
    tie = {**values, (0.1, 100): 1.0, (0.1, 101): 1.0}  # 0.01 and 0.1 both at 1.0: the smaller wins
    assert tuning_rows(suite, tuning, _records(tuning, tie))[0]["chosen_lr"] == 0.01
    edge = {**values, (0.1, 100): 0.1, (0.1, 101): 0.1}
    assert tuning_rows(suite, tuning, _records(tuning, edge))[0]["edge"] is True
    assert choose(suite, tuning, _records(tuning, {**values, (0.1, 100): "error"})) is None  # retried first
    missing = _records(tuning, values)
    missing.pop(tuning[0].id)
    assert choose(suite, tuning, missing) is None


# ---- running --------------------------------------------------------------------------------------


def test_compared_and_calibration_trials_train_with_the_lr_the_tuning_trials_chose(tuned) -> None:
    _, out, outcome = tuned
    results = outcome.results
    [row] = results["tuning"]
    tuning = [r for r in journal(out) if r["spec"]["role"] == "tuning"]
    assert len(tuning) == 6 and not any(t["spec"]["role"] == "tuning" for t in results["trials"])
    medians = {lr: statistics.median(r["final_train_loss"] for r in tuning if r["spec"]["optimizer"]["lr"] == lr)
               for lr in (0.001, 0.01, 0.1)}
    assert [g["median"] for g in row["grid"]] == [medians[lr] for lr in (0.001, 0.01, 0.1)]
    assert row["chosen_lr"] == min(medians, key=lambda lr: (medians[lr], lr))
    assert row["chosen_lr"] == 0.1 and row["edge"]  # 20 steps of SGD: the largest lr of the grid goes furthest
    assert {t["spec"]["role"] for t in results["trials"]} == {"calibration", "compared"}
    assert {t["spec"]["optimizer"]["lr"] for t in results["trials"]} == {row["chosen_lr"]}
    assert {r["tuned_lr"] for r in results["summary"]} == {0.1}
    assert not results["partial"] and outcome.ran == 12


def test_the_report_shows_the_tuned_learning_rates_and_the_edge_warning(tuned) -> None:
    _, out, outcome = tuned
    text = render_markdown(outcome.results, {})
    assert "## Tuned learning rates" in text
    assert "| digits | sgd | 0.1 | ×10 |" in text and "**chosen**" in text
    assert "at the grid's edge: widen the grid" in text
    assert "## Tuned learning rates" in (out / "report.md").read_text()
    console = Console(file=io.StringIO(), width=200)
    EXPERIMENT.render_terminal(outcome.results, console)
    assert "tuned lr: digits · sgd: 0.1" in console.file.getvalue()  # type: ignore[attr-defined]


def test_a_rerun_skips_the_tuning_trials_and_reuses_the_choice(tuned, tmp_path: Path) -> None:
    path, out, first = tuned
    lines = len(journal(out))
    again = run(path, out)
    assert again.ran == 0 and len(journal(out)) == lines
    assert again.results["tuning"] == json.loads(json.dumps(first.results["tuning"]))
    more = run(write(path.parent, seeds=[0, 1, 2]), out)  # one more compared seed: only its arms run
    assert more.ran == 2 and more.results["tuning"][0]["chosen_lr"] == 0.1


def test_a_failed_tuning_trial_stops_after_the_first_stage_and_a_rerun_completes_it(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def flaky(specs: list[TrialSpec], data_root: str | None, progress: Any = None) -> list[dict[str, Any]]:
        if any(s.seed == 101 for s in specs):
            raise RuntimeError("boom")
        return run_pair(specs, data_root, progress)

    path, out = write(tmp_path, seeds=[0], arms=["baseline"]), tmp_path / "out"
    monkeypatch.setattr(PairsExperiment, "run_task", staticmethod(flaky))
    broken = run(path, out)
    assert broken.results["partial"] and broken.results["trials"] == []
    assert broken.results["tuning"][0]["complete"] is False and broken.results["tuning"][0]["chosen_lr"] is None
    assert "not chosen yet" in render_markdown(broken.results, {})
    monkeypatch.undo()
    fixed = run(path, out)
    assert fixed.ran == 3 + 2 + 1  # the three failed tuning trials, two calibration baselines, one compared
    assert not fixed.results["partial"] and fixed.results["tuning"][0]["complete"]


def test_tune_only_runs_the_tuning_trials_alone_and_a_full_run_reuses_them(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from telebench.cli import app

    path, out = write(tmp_path, seeds=[0], arms=["baseline"]), tmp_path / "out"
    first = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--tune-only"],
                               env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert first.exit_code == 0, first.output
    assert "tuned lr: digits · sgd:" in first.output
    records = journal(out)
    assert len(records) == 6 and all(r["spec"]["role"] == "tuning" for r in records)  # 3 lrs × 2 seeds
    results = json.loads((out / "results.json").read_text())
    assert results["tuning"][0]["complete"] and not results["partial"]
    report = (out / "report.md").read_text()
    assert "## Tuned learning rates" in report and "0 trials (only the tuning stage ran: 1 optimizer(s) tuned" in report
    assert "Only the tuning stage ran" in first.output
    full = run(path, out)
    assert full.ran == 2 + 1 and full.results["tuning"] == results["tuning"]  # calibration and compared only


@pytest.mark.parametrize(("tune_lr", "extra", "message"), [
    (None, [], "tunes no lr; add `tune_lr"),
    ({"grid": [0.1, 1]}, ["--replicate", "2"], "--tune-only and --replicate cannot be combined"),
])
def test_tune_only_refuses_a_suite_without_tuning_or_with_replicate(tmp_path: Path, tune_lr: Any, extra: list[str],
                                                                   message: str) -> None:
    from typer.testing import CliRunner

    from telebench.cli import app

    path = write(tmp_path, tune_lr=tune_lr)
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--tune-only", *extra])
    assert result.exit_code != 0 and isinstance(result.exception, UserError)
    assert message in str(result.exception)
    assert not (tmp_path / "out").exists()
