"""`pretrain`: the pair's initial network is trained, early-stopped on a calibration holdout, before the arms."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from telebench.errors import UserError
from telebench.experiments.pairs import loop, pretrain
from telebench.experiments.pairs.load import load_suite
from telebench.experiments.pairs.plan import expand
from telebench.experiments.pairs.spec import (
    BudgetSpec,
    PretrainSpec,
    ScheduleSpec,
    TargetSpec,
    TeleportSpec,
    TrialSpec,
)
from telebench.experiments.pairs.task import run_pair
from telebench.training.evaluation import evaluate
from telebench.training.holdout import carve_holdout, holdout_seed
from telebench.training.model_families import build_from_spec
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec

PRE = PretrainSpec(patience=2, max_epochs=4, holdout=300)


def trial(arm_kind: str, pre: PretrainSpec | None = PRE, *, seed: int = 0, lr: float = 0.1) -> TrialSpec:
    teleport = TeleportSpec(group="rescale", steps=3, lr=1e-2, batch_size=64, state_policy="keep",
                            schedule=ScheduleSpec("at_steps", steps=(0, 10)))
    return TrialSpec(suite="pretrain", case="digits", arm=arm_kind, arm_kind=arm_kind, dataset=DatasetSpec("digits"),
                     model=ModelSpec((64, 8, 10), "relu"), optimizer=OptimizerSpec("sgd", lr), optimizer_label="sgd",
                     teleport=None if arm_kind == "baseline" else teleport, device="cpu", seed=seed, batch_size=32,
                     budget=BudgetSpec("steps", 20), eval_every=10, target=TargetSpec(), pretrain=pre)


SUITE: dict[str, Any] = {
    "name": "pretrained",
    "defaults": {"budget": {"steps": 20}, "eval_every": 10, "seeds": [0], "target": {"value": 0.5},
                 "arms": ["baseline", "teleport"], "teleport": {"batch_size": 64},
                 "pretrain": {"patience": 2, "max_epochs": 4, "holdout": 300}},
    "cases": [{"name": "digits", "dataset": {"name": "digits"}, "model": {"widths": [64, 8, 10], "activation": "relu"},
               "optimizers": [{"name": "sgd", "lr": 0.1}]}],
}


def write(tmp_path: Path, **defaults: object) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "defaults": {**SUITE["defaults"], **defaults}}, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Bit-identical trajectories need one fixed reduction order."""


def test_every_arm_starts_from_the_same_pretrained_weights() -> None:
    base, tele = run_pair([trial("baseline"), trial("teleport")], None)
    (fresh,) = run_pair([trial("baseline", None)], None)
    first = {k: base["history"][0][k] for k in ("train_loss", "val_loss", "val_accuracy")}
    assert first == {k: tele["history"][0][k] for k in first}  # identical starting weights
    assert base["history"][0]["val_loss"] < fresh["history"][0]["val_loss"]  # and trained ones
    assert base["pretrain"] == tele["pretrain"] and "pretrain" not in fresh
    assert set(base["pretrain"]) >= {"epochs", "best_holdout_loss", "seconds"}


def test_the_holdout_is_carved_from_training_the_same_for_every_seed_and_left_out_of_it() -> None:
    runner = loop.PairRunner([trial("baseline", seed=3)])
    n_train = len(runner.data.x_train) + PRE.holdout
    assert runner.holdout is not None and len(runner.holdout[0]) == PRE.holdout
    other = loop.PairRunner([trial("baseline", seed=4)])
    assert other.holdout is not None and torch.equal(runner.holdout[0], other.holdout[0])
    assert loop.PairRunner([trial("baseline", None)]).holdout is None
    full = loop.PairRunner([trial("baseline", None)]).data
    assert len(full.x_train) == n_train
    rest, (x_ho, _) = carve_holdout(full, PRE.holdout, holdout_seed(DatasetSpec("digits")))
    rows = {tuple(r.tolist()) for r in full.x_train}
    assert len(rest.x_train) + len(x_ho) == n_train and torch.equal(rest.x_train, runner.data.x_train)
    assert {tuple(r.tolist()) for r in rest.x_train} | {tuple(r.tolist()) for r in x_ho} <= rows
    assert holdout_seed(DatasetSpec("digits", (("root", "/a"),))) == holdout_seed(DatasetSpec("digits"))


def _pretrained(spec: TrialSpec) -> tuple[loop.PairRunner, nn.Module, dict[str, Any] | None]:
    """The pair runner of `spec` (holdout carved), a fresh model of its seed, and that model pretrained."""
    runner = loop.PairRunner([spec])
    assert runner.holdout is not None
    model = build_from_spec(spec.model, seed=spec.seed)
    return runner, model, pretrain.pretrain(model, spec, runner.data, runner.holdout, runner.loss_fn)


def test_early_stopping_fires_and_the_best_checks_weights_are_restored() -> None:
    spec = trial("baseline", PretrainSpec(patience=1, max_epochs=20, holdout=300, lr=5.0))
    runner, model, record = _pretrained(spec)
    assert record is not None and record["stopped"] == "patience" and record["epochs"] < 20
    assert record["lr"] == 5.0 and len(record["holdout_losses"]) == record["epochs"] + 1
    best = min(record["holdout_losses"])
    assert record["best_holdout_loss"] == best and record["holdout_losses"][-1] > best
    assert evaluate(model, *runner.holdout, runner.data.task, spec.eval_batch_size)[0] == best


def test_a_run_to_max_epochs_keeps_the_lowest_check() -> None:
    spec = trial("baseline", PretrainSpec(patience=5, max_epochs=3, holdout=300, every_epochs=2))
    runner, model, record = _pretrained(spec)
    assert record is not None and record["stopped"] == "max_epochs" and record["epochs"] == 3
    assert len(record["holdout_losses"]) == 3  # epoch 0, 2, and the last (3)
    assert evaluate(model, *runner.holdout, runner.data.task, spec.eval_batch_size)[0] == record["best_holdout_loss"]


def test_pretraining_runs_before_any_arm_clock_exists_and_its_seconds_are_kept_apart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_step, real_clock = pretrain.optimizer_step, loop.Clock

    def step(*args: Any) -> None:
        events.append("pretrain step")
        real_step(*args)

    class SpyClock(real_clock):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            events.append("clock")
            super().__init__(*args, **kwargs)

    stamps = iter([100.0, 1100.0])  # pretraining's own stopwatch, apart from the arms' clocks

    class FakeTime:
        @staticmethod
        def perf_counter() -> float:
            return next(stamps)

    monkeypatch.setattr(pretrain, "optimizer_step", step)
    monkeypatch.setattr(pretrain, "time", FakeTime)
    monkeypatch.setattr(loop, "Clock", SpyClock)
    records = run_pair([trial("baseline"), trial("teleport")], None)
    last_step = max(i for i, e in enumerate(events) if e == "pretrain step")
    assert events.index("clock") > last_step and events.count("clock") == 2  # one per arm, after pretraining
    monkeypatch.undo()
    (fresh,) = run_pair([trial("baseline", None)], None)
    for record in records:
        assert record["pretrain"]["seconds"] == 1000.0
        assert record["history"][0]["train_clock_s"] == 0.0 == fresh["history"][0]["train_clock_s"]
        assert record["steps"] == fresh["steps"] == 20
        assert record["train_clock_s"] < 1000.0 and record["wall_s"] < 1000.0 and record["eval_clock_s"] < 1000.0


def test_pretrain_enters_the_id_only_when_set(tmp_path: Path) -> None:
    plain = trial("teleport", None)
    legacy = {k: v for k, v in plain.to_dict().items() if k not in ("role", "pretrain")}
    legacy["model"] = {k: v for k, v in legacy["model"].items() if k not in ("family", "kwargs", "inputs")}
    legacy["teleport"] = {k: v for k, v in legacy["teleport"].items() if k != "bump_steps"}
    assert plain.id == hashlib.sha256(json.dumps(legacy, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert len({plain.id, trial("teleport").id, trial("teleport", dataclasses.replace(PRE, patience=3)).id}) == 3
    plan = expand(load_suite(write(tmp_path)))
    assert {t.pretrain for t in plan} == {PretrainSpec(patience=2, max_epochs=4, holdout=300)}
    plan = expand(load_suite(write(tmp_path, pretrain=None)))
    assert {t.pretrain for t in plan} == {None}


def test_a_holdout_that_leaves_too_few_training_samples_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"defaults\.pretrain\.holdout: a holdout of 5000 leaves 0 of the 1258 "
                                        r"training samples of digits.*use at most 1194\.$"):
        load_suite(write(tmp_path, pretrain={"holdout": 5000}, teleport={"batch_size": 64}))
    with pytest.raises(UserError, match=r"defaults\.pretrain\.holdout: .*largest batch \(1000\)"):
        load_suite(write(tmp_path, pretrain={"holdout": 300}, teleport={"batch_size": 1000}))
    with pytest.raises(UserError, match=r"every_epochs 5 is more than max_epochs 2"):
        load_suite(write(tmp_path, pretrain={"every_epochs": 5, "max_epochs": 2, "holdout": 100}))


def test_list_mentions_pretraining(tmp_path: Path) -> None:
    line = pretrain.describe_pretraining(expand(load_suite(write(tmp_path))), probe=False)
    assert line is not None and line.startswith("pretraining before the arms, off every clock")
    assert "digits (1 pairs): holdout 300, patience 2" in line
    assert pretrain.describe_pretraining(expand(load_suite(write(tmp_path, pretrain=None))), probe=False) is None


def test_a_tuned_case_pretrains_at_the_written_lr_in_every_stage(tmp_path: Path) -> None:
    plan = expand(load_suite(write(tmp_path, calibration_seeds=[100], tune_lr={"grid": [0.5, 1.0]})))
    assert {t.role for t in plan} == {"tuning", "compared"} and len({t.optimizer.lr for t in plan}) == 2
    assert {t.pretrain.lr for t in plan if t.pretrain is not None} == {0.1} and all(t.pretrain for t in plan)
    plan = expand(load_suite(write(tmp_path, calibration_seeds=[100], tune_lr={"grid": [0.5, 1.0]},
                                   pretrain={"holdout": 300, "lr": 0.3})))
    assert {t.pretrain.lr for t in plan if t.pretrain is not None} == {0.3}
