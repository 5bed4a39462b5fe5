"""The correlation study: its YAML, its statistics, an end-to-end run (resumed, and in a process pool),
and the paired final-metric comparison used for the generalization suite."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from telebench.analysis.correlation import correlate
from telebench.analysis.paired_final import paired_differences, render_markdown
from telebench.cli import app
from telebench.errors import UserError
from telebench.experiments.correlation.run import run_study
from telebench.experiments.correlation.schema import load_study

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
    assert results["schema"] == "telebench.correlation/1"
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
    assert (again.trained, again.resumed) == (0, 3)

    # two worker processes train bit-identical networks
    pooled = run_study(load_study(path), tmp_path / "pooled", jobs=2)
    assert pooled.trained == 3
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
