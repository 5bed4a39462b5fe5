"""The correlation study: its YAML, its statistics, an end-to-end run (resumed, and in a process pool),
and the paired final-metric comparison used for the generalization suite."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from telebench.analysis.correlation import correlate
from telebench.analysis.paired_final import paired_differences, render_markdown
from telebench.cli import app
from telebench.errors import UserError
from telebench.execution.journal import Journal, lock
from telebench.experiments.base import RunOutcome, RunRequest
from telebench.experiments.correlation.experiment import EXPERIMENT as CORRELATION
from telebench.experiments.correlation.schema import Study, load_study
from telebench.experiments.correlation.unit import case_key, journal_id, network_id
from telebench.experiments.runner import run_experiment

STUDY = {
    "kind": "correlation",
    "name": "tiny",
    "defaults": {
        "model": {"widths": [64, 8, 10], "activation": "leaky_relu"},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "batch_size": 16,
        "measure_batch": 50,
        "metrics": {
            "sharp": {"metric": "sharpness", "radii": [0.5], "n_directions": 4},
            "curv": {"metric": "curvature", "group": "gl-data", "n_draws": 2},
        },
    },
    "cases": [{"name": "digits", "dataset": {"name": "digits"}, "networks": 3, "budget": {"steps": 20}}],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _write(tmp_path: Path, doc: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _edited(edit) -> dict:
    doc = json.loads(json.dumps(STUDY))
    edit(doc)
    return doc



def run_study(study: Study, out: Path, jobs: int = 1, console: Console | None = None) -> RunOutcome:
    """A study through the one runner, as `telebench correlate --jobs N` runs it."""
    request = RunRequest(out_dir=out, executor="process" if jobs > 1 else "local", jobs=jobs if jobs > 1 else None)
    return run_experiment(CORRELATION, study, request, console or _quiet())

def test_a_study_loads_with_defaults_merged(tmp_path):
    study = load_study(_write(tmp_path, _edited(lambda d: d["cases"][0].update(model={"widths": [64, 12, 10]}))))
    (case,) = study.cases
    assert case.model.widths == (64, 12, 10) and case.model.activation == "leaky_relu"  # merged key by key
    assert list(case.seeds) == [0, 1, 2]
    assert [m.label for m in case.metrics] == ["sharp", "curv"]
    assert case.metrics[0].options() == {"radii": [0.5], "n_directions": 4, "directions": "isotropic", "seed": 0}
    assert load_study(_write(tmp_path, STUDY), networks=7).cases[0].networks == 7


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["defaults"].update(optimiser={"name": "sgd"}), "defaults.optimiser: unknown key 'optimiser'"),
        (lambda d: d["cases"][0].pop("dataset"), "cases[0].dataset: is missing"),
        (lambda d: d["defaults"]["model"].update(activation="relu"), "defaults.metrics.curv.group"),
        (lambda d: d["defaults"]["model"].update(widths=[784, 8, 10]), "defaults.model.widths: must start at 64"),
        (lambda d: d["cases"][0].update(networks=2), "cases[0].networks: a correlation needs at least 3"),
        (lambda d: d["defaults"].update(measure_batch=5000), "defaults.measure_batch: 5000 is larger"),
        (lambda d: d["defaults"]["metrics"]["sharp"].update(directions="gauss"), "directions"),
        (lambda d: d.update(kind="train"), "kind: must be 'correlation'"),
    ],
)
def test_bad_studies_get_one_sentence_naming_the_key(tmp_path, edit, message):
    with pytest.raises(UserError) as info:
        load_study(_write(tmp_path, _edited(edit)))
    assert message in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "study.yaml"))


def test_the_command_exits_2_with_one_line_and_no_traceback(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = subprocess.run([sys.executable, "-m", "telebench", "correlate", str(missing)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr


def test_correlation_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    strong = correlate(x, 3 * x + 0.1 * rng.normal(size=60), "pearson")
    assert strong.r > 0.99 and strong.ci_low > 0.98 and strong.verdict == "positive" and strong.n == 60
    # Spearman sees through a monotone transform; Pearson does not reach 1
    assert correlate(x, np.exp(4 * x), "spearman").r == pytest.approx(1.0)
    assert correlate(x, np.exp(4 * x), "pearson").r < 0.9
    noise = correlate(x, rng.normal(size=60), "spearman")
    assert noise.ci_low < 0 < noise.ci_high and noise.verdict == "no clear correlation"
    assert correlate(x, -x, "spearman").verdict == "negative"
    # non-finite pairs are dropped, a constant has no correlation
    assert correlate([1.0, 2.0, math.nan, 3.0, 4.0], [1.0, 2.0, 5.0, 3.0, 5.0], "pearson").n == 4
    assert correlate(x, np.ones(60), "pearson").r is None
    # seeded: the same interval twice
    y = x + rng.normal(size=60)
    assert correlate(x, y, "pearson") == correlate(x, y, "pearson")

def test_a_study_runs_resumes_and_gives_the_same_networks_in_a_process_pool(tmp_path):
    path = _write(tmp_path, STUDY)
    result = CliRunner().invoke(app, ["correlate", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert (results["schema"], results["kind"]) == ("telebench.results/2", "correlation")
    (case,) = results["cases"]
    assert [n["seed"] for n in case["networks"]] == [0, 1, 2]
    assert all(n["status"] == "ok" and set(n["metrics"]) == {"sharp", "curv"} for n in case["networks"])
    assert {(c["metric"], c["target"], c["method"]) for c in case["correlations"]} == {
        (m, t, k) for m in ("sharp", "curv") for t in ("val_loss", "gap") for k in ("pearson", "spearman")
    }
    report = (out / "report.md").read_text()
    assert "## digits" in report and "scatter-digits-sharp.png" in report
    assert (out / "scatter-digits-curv.png").stat().st_size > 1000

    # rerunning into the same folder trains nothing new
    again = run_study(load_study(path), out)
    assert (again.ran, again.skipped) == (0, 3)

    # two worker processes train bit-identical networks
    pooled = run_study(load_study(path), tmp_path / "pooled", jobs=2)
    assert pooled.ran == 3
    first = {n["seed"]: n for n in case["networks"]}
    for net in pooled.results["cases"][0]["networks"]:
        ref = first[net["seed"]]
        assert (net["val_loss"], net["metrics"]) == (ref["val_loss"], ref["metrics"])


def _trial(arm: str, seed: int, val_loss: float, accuracy: float) -> dict:
    return {"case": "c", "optimizer": "sgd", "device": "cpu", "arm": arm, "seed": seed, "status": "ok",
            "spec": {"arm_kind": "baseline" if arm == "baseline" else "teleport"},
            "final_val_loss": val_loss, "final_val_accuracy": accuracy}


def test_paired_differences_of_final_metrics():
    base = [0.50, 0.52, 0.48, 0.51, 0.49]
    trials = [_trial("baseline", s, v, 0.8) for s, v in enumerate(base)]
    trials += [_trial("better", s, v - 0.01 * (s + 1), 0.8 + 0.01) for s, v in enumerate(base)]
    trials += [_trial("same", s, v + (0.001 if s % 2 else -0.001), 0.8) for s, v in enumerate(base)]
    rows = {(r.arm, r.metric): r for r in paired_differences({"trials": trials})}
    better = rows[("better", "final_val_loss")]
    assert better.n == 5 and better.better == 5
    assert better.median_difference == pytest.approx(-0.03)
    assert better.ci_high < 0 and better.verdict == "better"
    assert better.p_value == pytest.approx(0.0625)  # the smallest two-sided p for 5 pairs
    assert rows[("better", "final_val_accuracy")].verdict == "better"
    assert rows[("same", "final_val_loss")].verdict == "no clear difference"
    table = render_markdown(list(rows.values()))
    assert "| c | better | 0.5000 | 0.4700 | -0.0300 [" in table
    # against another arm instead of the baseline (e.g. the random-teleport control)
    against = {(r.arm, r.metric): r for r in paired_differences({"trials": trials}, reference="same")}
    assert ("same", "final_val_loss") not in against and against[("baseline", "final_val_loss")].n == 5
    assert against[("better", "final_val_loss")].verdict == "better"


# ---- resume through the shared journal -------------------------------------------------------------


def _quiet() -> Console:
    return Console(file=io.StringIO())


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "networks.jsonl").read_text(encoding="utf-8").splitlines()]


def _untimed(network: dict) -> dict:
    """A network's record without its clock readings (and the executor's `timing` stamps in the journal)."""
    return {k: v for k, v in network.items() if not k.endswith("_seconds") and k != "timing"}


def test_the_journal_supplies_the_id_of_an_old_line_from_its_key(tmp_path):
    path = tmp_path / "networks.jsonl"
    old = [{"case": "digits", "seed": seed, "status": "ok", "case_key": "abc"} for seed in (4, 6)]
    unkeyed = {"case": "digits", "seed": 5}  # no case_key: no id can be derived
    text = json.dumps(old[0]) + "\n" + json.dumps(unkeyed) + "\n" + json.dumps(old[1])  # the last newline lost
    path.write_text(text, encoding="utf-8")
    plain = Journal(tmp_path, "networks.jsonl")
    assert plain.records() == [] and "a record without an `id`" in plain.warnings[0] and len(plain.warnings) == 3
    keyed = Journal(tmp_path, "networks.jsonl", key=journal_id)
    assert keyed.records() == [{**line, "id": network_id("abc", line["seed"])} for line in old]
    assert len(keyed.warnings) == 1 and ":2: a record without an `id`" in keyed.warnings[0]
    keyed.append({"id": "x", "status": "ok"})  # the last old line lacked only its newline: whole, so kept
    assert [r["id"] for r in keyed.records()] == [network_id("abc", 4), network_id("abc", 6), "x"]
    assert path.read_text(encoding="utf-8").startswith(text + "\n")


def test_a_study_resumes_from_old_lines_without_an_id_and_cuts_a_torn_tail(tmp_path):
    study = load_study(_write(tmp_path, STUDY))
    out = tmp_path / "out"
    first = run_study(study, out, console=_quiet())
    assert (first.ran, first.skipped) == (3, 0)
    lines = _lines(out)
    assert [line["id"] for line in lines] == [network_id(case_key(study.cases[0]), s) for s in (0, 1, 2)]
    # the line format before the shared journal (no id), then a line torn by an interrupted append
    old = "".join(json.dumps({k: v for k, v in line.items() if k != "id"}) + "\n" for line in lines[:2])
    (out / "networks.jsonl").write_text(old + '{"case": "digits", "seed": 2, "sta', encoding="utf-8")
    again = run_study(study, out, console=_quiet())
    assert (again.ran, again.skipped) == (1, 2)
    networks = [r["cases"][0]["networks"] for r in (first.results, again.results)]
    assert [_untimed(n) for n in networks[1]] == [_untimed(n) for n in networks[0]]
    rows = _lines(out)  # the old lines are kept as written, the torn tail is gone, seed 2 is journaled anew
    assert rows[:2] == [{k: v for k, v in line.items() if k != "id"} for line in lines[:2]]
    assert len(rows) == 3 and _untimed(rows[2]) == _untimed(lines[2])
    # a case whose settings changed trains afresh
    changed = load_study(_write(tmp_path, _edited(lambda d: d["cases"][0].update(budget={"steps": 10}))))
    assert run_study(changed, out, console=_quiet()).ran == 3


def test_a_failing_network_is_recorded_the_study_goes_on_and_a_rerun_retries_it(tmp_path, monkeypatch):
    import telebench.experiments.correlation.unit as unit

    real = unit.train_network

    def flaky(case, seed, data_root=None):
        if seed == 1:
            raise RuntimeError("out of luck")
        return real(case, seed, data_root)

    study = load_study(_write(tmp_path, STUDY))
    out = tmp_path / "out"
    monkeypatch.setattr(unit, "train_network", flaky)
    first = run_study(study, out, console=_quiet())
    assert first.results["partial"] and [n["seed"] for n in first.results["cases"][0]["networks"]] == [0, 2]
    error = next(line for line in _lines(out) if line["status"] == "error")
    assert error["seed"] == 1 and "RuntimeError: out of luck" in error["message"]
    monkeypatch.setattr(unit, "train_network", real)
    again = run_study(study, out, console=_quiet())
    assert (again.ran, again.skipped) == (1, 2) and not again.results["partial"]


def test_a_second_run_into_a_study_folder_is_refused(tmp_path):
    study = load_study(_write(tmp_path, STUDY))
    out = tmp_path / "out"
    out.mkdir()
    with lock(out), pytest.raises(UserError, match="another telebench run is writing this folder"):
        run_study(study, out, console=_quiet())
    assert not (out / "networks.jsonl").exists()


def test_list_prints_each_case_and_a_rough_time_from_a_probe(tmp_path):
    result = CliRunner().invoke(app, ["list", str(_write(tmp_path, STUDY))])
    assert result.exit_code == 0, result.output
    assert "digits: 3 × digits 64-8-10 sgd lr 0.05, batch 16, 20 steps" in result.output
    assert "s/epoch" in result.output and "rough time on one core" in result.output
    stopped = _edited(lambda d: d["cases"][0].update(
        budget=None, early_stopping={"patience": 2, "max_epochs": 5, "holdout": 100}))
    result = CliRunner().invoke(app, ["list", str(_write(tmp_path, stopped))])
    assert result.exit_code == 0, result.output
    assert "early stopping on 100 held-out training samples (patience 2" in result.output
    assert "at most" in result.output
