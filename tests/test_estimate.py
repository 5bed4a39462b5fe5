"""`telebench list`'s estimate: a measured probe of the plan's distinct work, scaled by its steps, and the
static figures where probing is impossible. Nothing here asserts a time: only what was measured, that
it is what the estimate uses, and how the estimate scales."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from telebench.config.overrides import Overrides
from telebench.errors import UserError
from telebench.experiments.pairs import estimate
from telebench.experiments.pairs.estimate import (
    Costs,
    Probed,
    cost_key,
    estimate_plan,
    estimate_seconds,
    probe_plan,
    teleport_key,
    trial_seconds,
)
from telebench.experiments.pairs.load import load_suite
from telebench.experiments.pairs.plan import expand
from telebench.experiments.pairs.spec import TrialSpec
from telebench.experiments.pairs.view import describe_estimate, render_plan

SUITE = {
    "name": "t",
    "defaults": {"budget": {"steps": 40}, "eval_every": 10, "seeds": [0, 1], "batch_size": 16,
                 "calibration_seeds": [100],
                 "arms": ["baseline", "teleport", "reset-only"],
                 "teleport": {"steps": 2, "batch_size": 32, "schedule": {"at_steps": [0, 20]}}},
    "cases": [
        {"name": "digits", "dataset": {"name": "digits"}, "model": {"widths": [64, 8, 10], "activation": "relu"},
         "teleport": {"group": "rescale"},
         "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.001}]},
        {"name": "regression", "dataset": {"name": "synthetic-regression", "n_features": 8, "n_outputs": 2},
         "model": {"widths": [8, 8, 2], "activation": "identity"}, "teleport": {"group": "linear"},
         "optimizers": [{"name": "sgd", "lr": 0.01}]},
    ],
}


def plan_of(tmp_path: Path, *sets: str) -> list[TrialSpec]:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    return expand(load_suite(path, Overrides(sets=list(sets))))


def fake_probe(plan: list[TrialSpec], costs: Costs, teleport_s: float) -> Probed:
    probed = Probed(once_s=0.5)
    for spec in plan:
        probed.costs[cost_key(spec)] = costs
        if spec.teleport is not None and spec.arm_kind == "teleport":
            probed.teleports[teleport_key(spec)] = teleport_s
    return probed


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[TrialSpec], Probed]:
    plan = plan_of(tmp_path_factory.mktemp("suite"))
    return plan, probe_plan(plan)


def test_the_probe_measures_each_distinct_piece_of_work_once(probed: tuple[list[TrialSpec], Probed]) -> None:
    plan, result = probed
    assert not result.failed
    assert set(result.costs) == {cost_key(s) for s in plan}  # digits × (sgd, adam), regression × sgd
    assert len(result.costs) == 3
    teleporting = {teleport_key(s) for s in plan if s.arm_kind == "teleport"}
    assert set(result.teleports) == teleporting and len(teleporting) == 2  # one per group, not per optimizer
    for costs in result.costs.values():
        assert costs.step_s > 0 and costs.eval_s > 0 and costs.held_out_s > 0 and costs.arm_s > 0
    assert all(seconds > 0 for seconds in result.teleports.values())


def test_the_estimate_is_the_probe_scaled_by_each_trials_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    costs = Costs(step_s=0.01, eval_s=0.1, held_out_s=0.001, pair_s=0.3, arm_s=0.02, test_s=0.05)
    monkeypatch.setattr(estimate, "probe_plan", lambda plan: fake_probe(plan, costs, teleport_s=1.0))
    short, long = plan_of(tmp_path), plan_of(tmp_path, "defaults.budget={steps: 400}")
    e_short, e_long = estimate_plan(short), estimate_plan(long)
    assert e_short.probed and e_long.probed and e_short.probed_trials == len(short)
    # 360 more steps and 36 more evaluations per trial; the teleports stay at steps 0 and 20
    assert e_long.seconds - e_short.seconds == pytest.approx(len(short) * (360 * 0.01 + 36 * 0.1))
    baseline = next(s for s in short if s.arm_kind == "baseline" and s.role == "compared")
    teleport = next(s for s in short if s.arm_kind == "teleport" and s.pair_key == baseline.pair_key)
    per_pair = sum(1 for s in short if s.pair_key == baseline.pair_key)
    expected = 0.3 / per_pair + 0.02 + 40 * 0.01 + 5 * 0.1 + 0.05
    assert trial_seconds(baseline, costs, None, per_pair) == pytest.approx(expected)
    assert trial_seconds(teleport, costs, 1.0, per_pair) == pytest.approx(expected + 2 * (1.0 + 2 * 0.001))
    assert estimate_plan(short, startup_s=3.0).seconds == pytest.approx(e_short.seconds + 3.0)  # once, when probed
    assert estimate.cli_startup_seconds() == 0.0  # pytest is not the telebench command line
    arms = Counter(s.pair_key for s in short)
    assert e_short.seconds == pytest.approx(0.5 + sum(
        trial_seconds(s, costs, 1.0 if s.arm_kind == "teleport" else None, arms[s.pair_key]) for s in short))


def test_a_case_that_cannot_be_probed_falls_back_to_the_static_figures_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_of(tmp_path)

    def fail_on_digits(self: estimate._Probe, spec: TrialSpec) -> object:
        if spec.case == "digits":
            raise UserError("dataset files are missing under data/")
        return original(self, spec)

    original = estimate._Probe._stand_in
    monkeypatch.setattr(estimate._Probe, "_stand_in", fail_on_digits)
    mixed = estimate_plan(plan)
    assert mixed.failed == {"digits": "dataset files are missing under data/"}
    assert 0 < mixed.probed_trials < mixed.trials and not mixed.probed
    digits = [s for s in plan if s.case == "digits"]
    static_part = estimate_seconds(digits)
    assert mixed.seconds > static_part
    text = describe_estimate(mixed)
    assert "rough time" in text and "static figures" in text and "digits: dataset files are missing" in text

    def fail(self: estimate._Probe, spec: TrialSpec) -> object:
        raise OSError("no")

    monkeypatch.setattr(estimate._Probe, "_stand_in", fail)
    none = estimate_plan(plan)
    assert none.probed_trials == 0 and none.seconds == pytest.approx(estimate_seconds(plan))
    assert "static figures" in describe_estimate(none)


def test_a_cuda_trial_without_cuda_is_estimated_statically(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    plan = [replace(s, device="cuda") for s in plan_of(tmp_path) if s.case == "regression"]
    result = estimate_plan(plan)
    assert result.probed_trials == 0 and result.failed == {"regression": "no CUDA device on this machine"}


def test_list_shows_the_probed_estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    costs = Costs(step_s=0.01, eval_s=0.1, held_out_s=0.001)
    monkeypatch.setattr(estimate, "probe_plan", lambda plan: fake_probe(plan, costs, teleport_s=1.0))
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    suite = load_suite(path)
    console = Console(file=io.StringIO(), width=200)
    render_plan(suite, expand(suite), console)
    title = next(line for line in console.file.getvalue().splitlines() if line.startswith("t: "))  # type: ignore[attr-defined]
    assert "rough time" in title and "probe of this machine" in title and "±3×" not in title


def test_out_of_probe_time_another_optimizer_borrows_the_same_models_step(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    plan = [t for t in plan_of(tmp_path) if t.case == "digits"]
    monkeypatch.setattr(estimate, "PROBE_BUDGET_S", 0.0)  # every key after the first is out of time
    probed = probe_plan(plan)
    sgd = next(t for t in plan if t.optimizer_label == "sgd")
    adam = next(t for t in plan if t.optimizer_label == "adam")
    assert "digits" not in probed.failed
    assert probed.costs[cost_key(adam)] is probed.costs[cost_key(sgd)]
    assert estimate_plan(plan, startup_s=0.0).probed
