"""`telebench run SUITE --replicate K`: the original first, then the primary comparisons on fresh seeds,
one `replication-<n>/` folder per call, and the rule that says whether a verdict held."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from synthetic_results import make_results
from typer.testing import CliRunner

from telebench.analysis.replication import HELD, INCONCLUSIVE, NOT_HELD, judge, outcome, primary_rows
from telebench.cli import app
from telebench.commands.replicate import _next_replication, replicate
from telebench.errors import UserError
from telebench.experiments.base import RunRequest
from telebench.experiments.pairs.load import load_suite
from telebench.experiments.registry import get_experiment

SUITE: dict[str, Any] = {
    "name": "rep",
    "analysis": {"primary_metric": "final_train_loss",
                 "primary_comparisons": [{"arm": "teleport", "against": "reset-only"}]},
    "defaults": {"budget": {"steps": 20}, "eval_every": 10, "seeds": [0, 2], "calibration_seeds": [1],
                 "arms": ["baseline", "teleport", "reset-only"],
                 "teleport": {"steps": 2, "batch_size": 64, "schedule": {"at_steps": [0, 10]}}},
    "cases": [{"name": "digits", "dataset": {"name": "digits"}, "model": {"widths": [64, 8, 10], "activation": "relu"},
               "optimizers": [{"name": "adam", "lr": 0.01}]}],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Any]:
    """Two `--replicate 1` calls into one folder: the first runs the suite itself, then replication-1."""
    folder = tmp_path_factory.mktemp("replicate")
    suite = folder / "rep.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    out = folder / "out"
    args = ["run", str(suite), "--out", str(out), "--replicate", "1"]
    first = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    journal_lines = (out / "results.jsonl").read_text().count("\n")
    second = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    return {"out": out, "suite": suite, "first": first, "second": second, "journal_lines": journal_lines}


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_original_runs_first_and_records_its_declaration(runs: dict[str, Any]) -> None:
    assert runs["first"].exit_code == 0, runs["first"].output
    assert "holds no complete results of rep: running the suite first" in runs["first"].output
    results = _json(runs["out"] / "results.json")
    assert results["analysis"]["primary_comparisons"] == [
        {"arm": "teleport", "against": "reset-only", "case": None, "optimizer": None}]
    assert [(r["arm"], r["baseline_arm"]) for r in results["analysis"]["preregistered"]] == [("teleport", "reset-only")]
    assert (runs["out"] / "report.md").read_text().count("## Pre-registered comparisons") == 1


def test_each_call_replicates_on_fresh_seeds_into_the_next_folder(runs: dict[str, Any]) -> None:
    out = runs["out"]
    assert runs["second"].exit_code == 0, runs["second"].output
    assert "running the suite first" not in runs["second"].output  # complete results: not run again
    assert (out / "results.jsonl").read_text().count("\n") == runs["journal_lines"]
    one, two = _json(out / "replication-1" / "replication.json"), _json(out / "replication-2" / "replication.json")
    assert one["seeds"] == [3] and two["seeds"] == [4]  # 0 and 2 compared, 1 calibration, 3 taken by replication-1
    assert one["used_seeds"] == [0, 1, 2] and two["used_seeds"] == [0, 1, 2, 3]
    for n, record in ((1, one), (2, two)):
        trials = _json(out / f"replication-{n}" / "results.json")["trials"]
        compared = {(t["arm"], t["seed"]) for t in trials if t["spec"]["role"] == "compared"}
        assert compared == {("teleport", record["seeds"][0]), ("reset-only", record["seeds"][0])}  # no baseline
        assert {(t["arm"], t["seed"]) for t in trials if t["spec"]["role"] == "calibration"} == {("baseline", 1)}
        [line] = record["comparisons"]
        assert (line["arm"], line["against"], line["original"]["verdict"]) == ("teleport", "reset-only", "too few seeds")
        assert line["replication"]["n_pairs"] == 1 and line["outcome"] == INCONCLUSIVE
        text = (out / f"replication-{n}" / "replication.md").read_text(encoding="utf-8")
        assert text.startswith(f"# telebench replication {n}: rep\n")
        assert "| case | optimizer | device | arm | against | original | original p (raw → Holm) |" in text
        assert "| digits | adam | cpu | teleport | reset-only | too few seeds |" in text
        assert "**Result: 0 held, 0 did not hold, 1 inconclusive.**" in text and "Rule: **held**" in text
        assert (out / f"replication-{n}" / "report.md").is_file()
    assert "replication 2 of rep on seeds 4" in runs["second"].output
    assert "inconclusive" in runs["second"].output and "replication-2/replication.md" in runs["second"].output


def test_seeds_recorded_anywhere_in_the_folder_are_never_reused_and_an_interrupted_replication_resumes(
        tmp_path: Path) -> None:
    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    exp, config = get_experiment("train"), load_suite(path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text(json.dumps({"id": "a", "status": "ok", "seed": 3}) + "\n")
    assert _next_replication(exp, config, out, 2) == (1, [4, 5], [0, 1, 2, 3])
    (out / "replication-1").mkdir()
    (out / "replication-1" / "replication.json").write_text(json.dumps({"seeds": [4, 5]}))
    assert _next_replication(exp, config, out, 2) == (1, [4, 5], [0, 1, 2, 3])  # no replication.md yet: resume
    assert _next_replication(exp, config, out, 1) == (2, [6], [0, 1, 2, 3, 4, 5])  # another K: a new folder
    (out / "replication-1" / "replication.md").write_text("done")
    assert _next_replication(exp, config, out, 2)[:2] == (2, [6, 7])


def test_only_train_suites_replicate() -> None:
    with pytest.raises(UserError, match=r"^--replicate: study\.yaml is a `kind: correlation` suite; only train"):
        replicate(SimpleNamespace(kind="correlation"), SimpleNamespace(source="study.yaml"),  # type: ignore[arg-type]
                  RunRequest(out_dir=Path("unused")), 1, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("original", "again", "expected"), [
    ("faster", "faster", HELD), ("slower", "slower", HELD), ("no clear difference", "no clear difference", HELD),
    ("no clear difference", "identical", HELD), ("identical", "identical", HELD),
    ("faster", "slower", NOT_HELD), ("faster", "no clear difference", NOT_HELD), ("slower", "identical", NOT_HELD),
    ("no clear difference", "faster", NOT_HELD), ("identical", "no clear difference", NOT_HELD),
    ("faster", "too few seeds", INCONCLUSIVE), ("faster", None, INCONCLUSIVE),
    ("too few seeds", "faster", INCONCLUSIVE), ("no clear difference", "too few seeds", INCONCLUSIVE),
    (None, "faster", INCONCLUSIVE),
])
def test_the_held_rule(original: str | None, again: str | None, expected: str) -> None:
    assert outcome(original, again) == expected


def test_without_a_declaration_every_teleport_arm_against_the_baseline_is_replicated() -> None:
    results = make_results()
    rows = primary_rows(results)
    assert [(r["case"], r["optimizer"], r["arm"], r["against"]) for r in rows] == [
        ("digits-mlp", "adam", "teleport", "baseline"), ("digits-mlp", "sgd", "teleport", "baseline"),
        ("synthetic", "sgd", "teleport", "baseline")]
    lines = judge(rows, [dict(rows[0], verdict="faster"), dict(rows[1], verdict="no clear difference")])
    assert [(line["original"]["verdict"], line["outcome"]) for line in lines] == [
        ("faster", HELD), ("faster", NOT_HELD), ("too few seeds", INCONCLUSIVE)]
    assert lines[2]["replication"] is None


def test_a_tuned_suite_replicates_at_the_original_lr_without_tuning_again(tmp_path: Path, one_thread: None) -> None:
    doc = json.loads(json.dumps(SUITE))
    doc["defaults"]["tune_lr"] = {"grid": [0.3, 1]}
    suite = tmp_path / "tuned.yaml"
    suite.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "--replicate", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    chosen = _json(out / "results.json")["tuning"][0]["chosen_lr"]
    replication = _json(out / "replication-1" / "results.json")
    assert all(t["spec"]["role"] != "tuning" for t in replication["trials"])  # the original's tuning stands
    assert {t["spec"]["optimizer"]["lr"] for t in replication["trials"]} == {chosen}
    assert replication["tuning"][0]["chosen_lr"] == chosen
    assert "## Tuned learning rates" in (out / "replication-1" / "report.md").read_text(encoding="utf-8")
    again = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "--replicate", "1"], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "running the suite first" not in again.output  # complete: tuning trials are not among its trials
    assert _json(out / "replication-2" / "replication.json")["seeds"] == [4]
