"""Early stopping in the correlation study: networks train until the loss on a calibration holdout of the
training split stops improving, the best weights are restored and measured, the validation split plays
no part, and the options are checked. Fast: digits, a 64-8-10 net, a few epochs."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

import telebench.experiments.correlation.train as train
from telebench.errors import UserError
from telebench.experiments.base import RunRequest
from telebench.experiments.correlation.experiment import EXPERIMENT as CORRELATION
from telebench.experiments.correlation.report import render_markdown, render_terminal
from telebench.experiments.correlation.schema import StudyCase, load_study
from telebench.experiments.correlation.stopping import split_holdout
from telebench.experiments.correlation.unit import case_key
from telebench.experiments.runner import run_experiment
from telebench.results.export import rows as result_rows
from telebench.results.schema import load_results
from telebench.training.datasets import load_dataset
from telebench.training.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
STOP = {"patience": 1, "max_epochs": 10, "holdout": 200, "every_epochs": 0.5}
STUDY = {
    "kind": "correlation",
    "name": "tiny-stop",
    "defaults": {
        "model": {"widths": [64, 8, 10], "activation": "leaky_relu"},
        "optimizer": {"name": "sgd", "lr": 0.5},  # large: the holdout loss turns up within a few epochs
        "batch_size": 16,
        "measure_batch": 50,
        "metrics": {"sharp": {"metric": "sharpness", "radii": [0.5], "n_directions": 4}},
    },
    "cases": [{"name": "digits", "dataset": {"name": "digits"}, "networks": 3, "early_stopping": STOP}],
}

pytestmark = pytest.mark.usefixtures("one_thread")


def _edited(edit=None) -> dict:
    doc = json.loads(json.dumps(STUDY))
    if edit is not None:
        edit(doc)
    return doc


def _case(tmp_path: Path, edit=None) -> StudyCase:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_edited(edit), sort_keys=False), encoding="utf-8")
    return load_study(path).cases[0]


def _finite(losses: list[float | None]) -> list[float]:
    return [x for x in losses if x is not None]


def test_training_stops_once_the_holdout_loss_stops_improving(tmp_path):
    case = _case(tmp_path)
    record = train.train_network(case, 0)
    assert record.status == "ok" and record.stop_epoch < STOP["max_epochs"]
    losses = record.holdout_losses
    assert len(losses) == round(record.stop_epoch / STOP["every_epochs"])  # one check every half epoch
    assert record.best_holdout_loss == min(_finite(losses))
    best = round(record.best_epoch / STOP["every_epochs"]) - 1
    assert losses[best] == record.best_holdout_loss
    # it stopped `patience` checks after the best, none of which improved on it
    assert len(losses) - 1 - best == STOP["patience"]
    assert all(x is None or x >= record.best_holdout_loss for x in losses[best + 1:])
    assert record.steps == round(record.stop_epoch * (record.train_size // case.batch_size))
    assert record.train_size == 1258 - STOP["holdout"]  # the holdout is taken from the training split


def test_a_network_that_keeps_improving_runs_to_max_epochs_and_one_that_never_has_a_finite_loss_diverges(tmp_path):
    slow = train.train_network(_case(tmp_path, lambda d: d["defaults"]["optimizer"].update(lr=0.05)), 0)
    assert slow.status == "ok" and slow.stop_epoch == STOP["max_epochs"] == slow.best_epoch
    wild = train.train_network(_case(tmp_path, lambda d: d["defaults"]["optimizer"].update(lr=10.0)), 0)
    assert wild.status == "diverged" and wild.best_epoch is None and wild.metrics == {}
    assert "never finite" in wild.message


def test_the_best_weights_are_restored_and_measured(tmp_path, monkeypatch):
    case = _case(tmp_path)
    seen: list[torch.nn.Module] = []
    real = train.measure

    def spy(model, data, metric, batch):
        seen.append(model)
        return real(model, data, metric, batch)

    monkeypatch.setattr(train, "measure", spy)
    record = train.train_network(case, 1)
    assert seen and record.best_epoch < record.stop_epoch  # the weights measured are not the last ones
    assert case.early_stopping is not None
    fit, (x_hold, y_hold) = split_holdout(load_dataset(case.dataset), case.early_stopping)
    (model,) = set(seen)
    assert evaluate(model, x_hold, y_hold, fit.task)[0] == pytest.approx(record.best_holdout_loss, rel=1e-6)
    assert evaluate(model, fit.x_val, fit.y_val, fit.task) == pytest.approx((record.val_loss, record.val_accuracy))
    assert evaluate(model, fit.x_train, fit.y_train, fit.task) == pytest.approx(
        (record.train_loss, record.train_accuracy))


def test_the_holdout_is_seeded_disjoint_and_taken_from_the_training_split(tmp_path):
    case = _case(tmp_path)
    stop = case.early_stopping
    assert stop is not None
    data = load_dataset(case.dataset)
    numbered = replace(data, x_train=torch.arange(len(data.x_train), dtype=torch.float32)[:, None])
    fit, (held, _) = split_holdout(numbered, stop)
    assert len(held) == 200 and len(fit.x_train) == 1058
    assert sorted(torch.cat([held, fit.x_train]).flatten().tolist()) == list(range(1258))
    assert torch.equal(held, split_holdout(numbered, stop)[1][0])  # the same for every network
    assert not torch.equal(held, split_holdout(numbered, replace(stop, seed=1))[1][0])
    assert fit.x_val is data.x_val and fit.y_val is data.y_val


def test_the_validation_split_never_influences_training_or_stopping(tmp_path, monkeypatch):
    case = _case(tmp_path)
    data = load_dataset(case.dataset)
    before = train.train_network(case, 2)
    scrambled = replace(data, x_val=torch.randn_like(data.x_val), y_val=torch.roll(data.y_val, 1))
    monkeypatch.setattr(train, "_data", lambda spec, root: scrambled)
    train._case_data.cache_clear()
    try:
        after = train.train_network(case, 2)
    finally:
        train._case_data.cache_clear()
    same = ("stop_epoch", "best_epoch", "best_holdout_loss", "holdout_losses", "train_loss", "train_accuracy",
            "steps", "metrics")
    assert all(getattr(before, k) == getattr(after, k) for k in same)
    assert after.val_loss != before.val_loss


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["cases"][0].update(budget={"epochs": 3}),
         "cases[0].early_stopping: budget (cases[0].budget) and early_stopping are mutually exclusive"),
        (lambda d: d["defaults"].update(budget={"epochs": 3}),
         "cases[0].early_stopping: budget (defaults.budget) and early_stopping are mutually exclusive"),
        (lambda d: d["cases"][0]["early_stopping"].update(holdout=5000),
         "cases[0].early_stopping.holdout: 5000 held-out samples leave fewer than one batch (16) of the 1258"),
        (lambda d: d["cases"][0]["early_stopping"].update(holdout=1258), "cases[0].early_stopping.holdout"),
        (lambda d: d["defaults"].update(measure_batch=1100),
         "defaults.measure_batch: 1100 is larger than the 1058 training samples of digits left after the "
         "early-stopping holdout"),
        (lambda d: d["cases"][0]["early_stopping"].update(patience=0), "cases[0].early_stopping.patience"),
        (lambda d: d["cases"][0]["early_stopping"].update(every_epochs=20), "must not exceed max_epochs"),
        (lambda d: d["cases"][0]["early_stopping"].update(patients=2), "unknown key 'patients'"),
        (lambda d: d["cases"][0].pop("early_stopping"), "cases[0].budget: is missing"),
    ],
)
def test_bad_early_stopping_gets_one_sentence_naming_the_key(tmp_path, edit, message):
    with pytest.raises(UserError) as info:
        _case(tmp_path, edit)
    text = str(info.value)
    assert message in text and text.startswith(str(tmp_path / "study.yaml")) and text.count("\n") == 0


def test_a_case_drops_an_inherited_budget_with_null_and_a_budget_case_keeps_its_key(tmp_path):
    def inherit(d):
        d["defaults"]["budget"] = {"steps": 20}
        d["cases"][0]["budget"] = None

    case = _case(tmp_path, inherit)
    assert case.early_stopping is not None and "budget" not in case.describe()
    budget = _case(tmp_path, lambda d: d["cases"][0].update(budget={"steps": 20}, early_stopping=None))
    assert budget.early_stopping is None and "early_stopping" not in budget.describe()
    # the key of tests/test_correlation.py's case, as computed before early stopping existed: old folders resume
    old = _case(tmp_path, lambda d: (d["defaults"].update(
        optimizer={"name": "sgd", "lr": 0.05},
        metrics={"sharp": {"metric": "sharpness", "radii": [0.5], "n_directions": 4},
                 "curv": {"metric": "curvature", "group": "gl-data", "n_draws": 2}}),
        d["cases"][0].update(budget={"steps": 20}, early_stopping=None)))
    assert case_key(old) == "192124699097fd9f"


def test_a_study_with_early_stopping_reports_how_trained_its_networks_are(tmp_path):
    out = tmp_path / "out"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False), encoding="utf-8")
    outcome = run_experiment(CORRELATION, load_study(path), RunRequest(out_dir=out, executor="local"),
                             Console(file=io.StringIO()))
    (case,) = outcome.results["cases"]
    assert case["config"]["early_stopping"]["holdout"] == 200 and "budget" not in case["config"]
    stops = [n["stop_epoch"] for n in case["networks"]]
    training = case["training"]
    assert training["stop_epoch"]["median"] == sorted(stops)[1] and training["stop_epoch"]["n"] == 3
    assert training["stop_epoch"]["low"] == min(stops) and training["at_max_epochs"] == 0
    assert 0 < training["val_accuracy"]["median"] <= 1
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "early stopping on a calibration holdout of 200 training samples (never the validation split)" in report
    assert f"stopped at epoch {sorted(stops)[1]:.3g} (median; range {min(stops):.3g}–{max(stops):.3g})" in report
    assert "median validation accuracy" in report
    terminal = io.StringIO()
    render_terminal(load_results(out / "results.json"), Console(file=terminal, width=250))
    assert "digits: stopped at epoch" in terminal.getvalue()
    rows = list(result_rows(load_results(out / "results.json")))
    assert [r["stop_epoch"] for r in rows] == stops and all(math.isfinite(r["best_holdout_loss"]) for r in rows)


def test_results_written_before_early_stopping_still_render():
    results = load_results(ROOT / "reports" / "paper-correlation" / "results.json")  # telebench.correlation/1
    markdown = render_markdown(results, {})
    assert "budget {'epochs': 10.0}" in markdown and "stopped at epoch" not in markdown
    assert "Networks: median validation accuracy 84.6 %" in markdown  # computed from the old networks
    terminal = io.StringIO()
    render_terminal(results, Console(file=terminal, width=250))
    assert "fashion-mnist: median validation accuracy" in terminal.getvalue()


def test_the_v2_suite_stops_early_on_both_cases_with_enough_networks_for_a_narrow_interval():
    study = load_study(ROOT / "suites" / "paper-correlation-v2.yaml")
    assert [c.name for c in study.cases] == ["fashion-mnist", "digits"]
    for case in study.cases:
        assert case.early_stopping is not None and case.networks >= 100
        assert 1.96 / math.sqrt(case.networks - 3) < 0.2  # Fisher-z half-width at r = 0
        kinds = {(m.kind, m.options().get("group") or m.options().get("directions")) for m in case.metrics}
        assert kinds == {("sharpness", "isotropic"), ("sharpness", "positive-orthant"), ("curvature", "gl-data"),
                         ("curvature", "rescale"), ("curvature_reference", None)}
    fashion = study.cases[0]
    assert (fashion.optimizer.lr, fashion.batch_size, fashion.model.widths, fashion.model.bias) == (
        0.01, 20, (784, 16, 10, 10), False)
    assert study.cases[1].optimizer.lr == 0.05
