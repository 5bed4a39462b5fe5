"""Plans whose verdicts can be trusted: calibration seeds, controls that control, no-op warnings,
divergence caught, and budgets that cannot hang."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from telebench.errors import UserError
from telebench.experiments.pairs.load import load_suite
from telebench.experiments.pairs.plan import expand
from telebench.experiments.pairs.spec import BudgetSpec, ScheduleSpec, TargetSpec, TeleportSpec, TrialSpec
from telebench.experiments.pairs.task import run_pair
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec

SUITE = {
    "name": "honest",
    "defaults": {"budget": {"steps": 30}, "eval_every": 10, "seeds": [0, 1], "calibration_seeds": [100],
                 "arms": ["baseline", "teleport", "reset-only"]},
    "cases": [{"name": "digits", "dataset": {"name": "digits"}, "model": {"widths": [64, 8, 10], "activation": "relu"},
               "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01}]}],
}


def write(tmp_path: Path, **defaults: object) -> Path:
    doc = {**SUITE, "defaults": {**SUITE["defaults"], **defaults}}  # type: ignore[dict-item]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def trial(arm_kind: str, seed: int = 0, *, lr: float = 0.1, optimizer: str = "sgd", steps: int = 30,
          policy: str = "reset") -> TrialSpec:
    teleport = TeleportSpec(group="rescale", steps=3, lr=1e-2, batch_size=64, state_policy=policy,
                            schedule=ScheduleSpec("at_steps", steps=(0, 10)))
    return TrialSpec(suite="honest", case="digits", arm=arm_kind, arm_kind=arm_kind, dataset=DatasetSpec("digits"),
                     model=ModelSpec((64, 16, 10), "relu"), optimizer=OptimizerSpec(optimizer, lr),
                     optimizer_label=optimizer, teleport=None if arm_kind == "baseline" else teleport, device="cpu",
                     seed=seed, batch_size=32, budget=BudgetSpec("steps", steps), eval_every=10, target=TargetSpec())


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Bit-identical trajectories need one fixed reduction order."""


def test_a_derived_target_without_calibration_seeds_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cases\[0\]\.target: a baseline_final target needs calibration seeds.*"
                                        r"calibration_seeds: \[100, 101, 102\]"):
        load_suite(write(tmp_path, calibration_seeds=[]))
    with pytest.raises(UserError, match=r"defaults.calibration_seeds: seeds \[1\] are also compared seeds"):
        load_suite(write(tmp_path, calibration_seeds=[1, 100]))
    load_suite(write(tmp_path, calibration_seeds=[], target={"value": 0.5}))  # an absolute target needs none


def test_calibration_baselines_are_planned_apart_and_old_trial_ids_are_unchanged(tmp_path: Path) -> None:
    plan = expand(load_suite(write(tmp_path)))
    calibration = [t for t in plan if t.role == "calibration"]
    assert [(t.optimizer_label, t.seed, t.arm_kind) for t in calibration] == [("sgd", 100, "baseline"),
                                                                            ("adam", 100, "baseline")]
    compared = next(t for t in plan if t.role == "compared")
    legacy = {k: v for k, v in compared.to_dict().items() if k != "role"}  # what a spec was before roles
    legacy["model"] = {k: v for k, v in legacy["model"].items() if k not in ("family", "kwargs", "inputs")}
    assert compared.id == dataclasses.replace(compared).id and "role" not in legacy
    import hashlib
    import json
    assert compared.id == hashlib.sha256(json.dumps(legacy, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert calibration[0].id != dataclasses.replace(calibration[0], role="compared").id


def test_reset_only_restarts_the_optimizer_whatever_the_policy_so_under_transport_it_differs(tmp_path: Path) -> None:
    plan = expand(load_suite(write(tmp_path, teleport={"state_policy": "transport"})))
    reset = next(t for t in plan if t.arm_kind == "reset-only")
    assert reset.teleport is not None and reset.teleport.state_policy == "reset"
    base, control = run_pair([trial("baseline", optimizer="adam", lr=0.01),
                              trial("reset-only", optimizer="adam", lr=0.01, policy="transport")], None)
    assert [h["train_loss"] for h in base["history"]] != [h["train_loss"] for h in control["history"]]


def test_a_reset_at_step_0_only_is_warned_about_for_every_optimizer(tmp_path: Path) -> None:
    notes = load_suite(write(tmp_path)).notes  # the default schedule: one teleport, at step 0
    assert any(n.startswith("warning: teleport.schedule (default): reset-only resets only at step 0") for n in notes)


def test_reset_only_with_plain_sgd_is_warned_about_and_equals_the_baseline(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, teleport={"schedule": {"at_steps": [10]}}))
    (warning,) = [n for n in suite.notes if "does nothing" in n]
    assert warning.startswith("warning: defaults.arms[2]: reset-only with sgd does nothing")
    assert "adam" not in warning  # Adam keeps state: its reset-only arm is a real control
    base, control = run_pair([trial("baseline"), trial("reset-only")], None)
    assert base["history"] == [{**h, "train_clock_s": b["train_clock_s"]} for h, b in
                               zip(control["history"], base["history"], strict=True)]


def test_a_blown_up_but_finite_loss_is_diverged_not_ok() -> None:
    (record,) = run_pair([trial("baseline", lr=1e6)], None)
    assert record["status"] == "diverged" and "over 10× its starting" in record["message"]


def test_a_budget_of_zero_steps_ends_instead_of_hanging(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"budget.epochs: 0.001 epochs of 39 steps .* is no training step"):
        load_suite(write(tmp_path, budget={"epochs": 0.001}))
    (record,) = run_pair([dataclasses.replace(trial("baseline"), budget=BudgetSpec("epochs", 0.001))], None)
    assert record["status"] == "ok" and {h["step"] for h in record["history"]} == {0}
    assert torch.get_num_threads() == 1


def test_end_to_end_a_plain_sgd_reset_only_control_is_reported_identical(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from telebench.experiments.base import RunRequest
    from telebench.experiments.registry import load_config
    from telebench.experiments.runner import run_experiment

    exp, suite = load_config(write(tmp_path, arms=["baseline", "reset-only"], teleport={"schedule": {"at_steps": [10]}}))
    assert any("reset-only with sgd does nothing" in note for note in suite.notes)
    out = tmp_path / "out"
    outcome = run_experiment(exp, suite, RunRequest(out_dir=out), Console(file=io.StringIO()))
    rows = {(r["optimizer"], r["arm"]): r for r in outcome.results["summary"]}
    assert rows[("sgd", "reset-only")]["verdict"] == "identical"
    assert rows[("adam", "reset-only")]["verdict"] != "identical"  # Adam's restart is a real control
    assert "identical to the baseline" in (out / "report.md").read_text()


def test_a_model_too_large_for_the_machine_is_refused_before_anything_is_allocated(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from telebench.config.overrides import Overrides
    from telebench.experiments.pairs import load, memory

    monkeypatch.setattr(load, "machine_bytes", lambda: 8 * 2**30)  # an 8 GB machine
    doc = yaml.safe_load(write(tmp_path, teleport={"group": "linear"}).read_text())
    doc["cases"][0]["model"] = {"widths": [64, 100_000, 10], "activation": "identity"}
    path = tmp_path / "large.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"model.widths: one pair of 3 arms needs about .* GB .* more than half of "
                                        r"this machine's 8 GB; use narrower layers, or pass --allow-large"):
        load_suite(path)
    assert load_suite(path, Overrides(allow_large=True)).cases  # the override lets it through
    # diagonal groups store vectors: the same width under rescale needs under a tenth of it
    diagonal, dense = (memory.pair_bytes([64, 100_000, 10], True, 3, 32, 1024, d) for d in (False, True))
    assert diagonal < dense / 10


def test_compare_leaves_calibration_baselines_out_of_the_baseline_seeds() -> None:
    import json

    from telebench.analysis.compare.telebench_results import read

    path = Path(__file__).resolve().parents[1] / "reports" / "quickstart" / "results.json"
    data = json.loads(path.read_text())
    assert any((t.get("spec") or {}).get("role") == "calibration" for t in data["trials"])
    baseline = read(path, data).rows[("digits-relu", "baseline", "sgd", "cpu")]["final_train_loss"]
    assert baseline.n == 10  # the 10 compared seeds, not the 5 calibration runs beside them
