"""The `lr-bump` control arm: the teleport's grad-norm factor as a step-size bump, without the teleport
(telebench/experiments/pairs/lr_bump.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console

from telebench.errors import UserError
from telebench.experiments.pairs import loop
from telebench.experiments.pairs.load import load_suite
from telebench.experiments.pairs.plan import expand
from telebench.experiments.pairs.spec import BudgetSpec, ScheduleSpec, TargetSpec, TeleportSpec, TrialSpec
from telebench.experiments.pairs.task import run_pair
from telebench.experiments.pairs.view import describe_teleport
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Bit-identical trajectories need one fixed reduction order."""


def trial(arm_kind: str, *, optimizer: str = "adam", lr: float = 0.01, steps: int = 30,
          at: tuple[int, ...] = (0, 10), **teleport: Any) -> TrialSpec:
    settings = {"group": "rescale", "steps": 3, "lr": 0.5, "batch_size": 64, **teleport}
    tp = TeleportSpec(schedule=ScheduleSpec("at_steps", steps=at), **settings)
    return TrialSpec(suite="bump", case="digits", arm=arm_kind, arm_kind=arm_kind, dataset=DatasetSpec("digits"),
                     model=ModelSpec((64, 16, 10), "relu"), optimizer=OptimizerSpec(optimizer, lr),
                     optimizer_label=optimizer, teleport=None if arm_kind == "baseline" else tp, device="cpu",
                     seed=0, batch_size=32, budget=BudgetSpec("steps", steps), eval_every=10, target=TargetSpec())


def curves(record: dict[str, Any]) -> list[tuple[Any, ...]]:
    """A trajectory without its clock readings (the arms' clocks differ, their weights must not)."""
    return [(h["step"], h["train_loss"], h["val_loss"], h["val_accuracy"]) for h in record["history"]]


def test_the_factor_at_step_0_is_the_teleport_arms_grad_norm_ratio_and_is_paid_on_the_clock() -> None:
    base, tele, bump = run_pair([trial("baseline"), trial("teleport"), trial("lr-bump")], None)
    first = tele["teleports"][0]
    assert first["accepted"] and first["objective"] == "grad_norm"  # ‖∇L‖²: the factor is its square root
    row = bump["teleports"][0]
    assert row["step"] == 0 and row["accepted"] and row["bump_steps"] == 10
    assert row["lr_factor"] == math.sqrt(first["objective_after"] / first["objective_before"]) > 1
    assert row["grad_norm_after"] / row["grad_norm_before"] == pytest.approx(row["lr_factor"], rel=1e-12)
    assert [r["step"] for r in bump["teleports"]] == [0, 10]
    assert "relative_weight_change" not in row  # its own weights never moved
    assert bump["teleport_clock_s"] > 0 and bump["teleport_overhead"] is not None and base["teleport_clock_s"] == 0
    assert bump["steps"] == base["steps"] == 30 and curves(bump)[0] == curves(base)[0]


def test_another_objective_measures_the_gradient_norms_directly() -> None:
    (bump,) = run_pair([trial("lr-bump", objective="curvature", direction="decrease", steps=2, lr=0.05,
                              at=(0,), objective_params=(("n_draws", 2),))], None)
    row = bump["teleports"][0]
    assert row["objective"] == "curvature" and row["grad_norm_before"] > 0
    if row["accepted"]:
        assert row["lr_factor"] == row["grad_norm_after"] / row["grad_norm_before"]
    else:
        assert row["lr_factor"] == 1.0


def test_a_rejected_teleport_gives_factor_1(monkeypatch: pytest.MonkeyPatch) -> None:
    import telebench.symmetry

    real = telebench.symmetry.teleport

    def rejected(*args: Any, **kwargs: Any) -> Any:
        record = real(*args, **kwargs)
        record.accepted, record.rejection = False, "loss"
        return record

    monkeypatch.setattr(telebench.symmetry, "teleport", rejected)
    (bump,) = run_pair([trial("lr-bump")], None)
    assert [(r["accepted"], r["lr_factor"]) for r in bump["teleports"]] == [(False, 1.0), (False, 1.0)]
    assert bump["teleports"][0]["grad_norm_after"] > bump["teleports"][0]["grad_norm_before"]  # what it proposed


def lrs_seen(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The lr of every training step the loop takes (after its warm-up steps)."""
    seen: list[float] = []
    real = loop.optimizer_step

    def spy(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *args: Any) -> Any:
        seen.append(optimizer.param_groups[0]["lr"])
        return real(model, optimizer, *args)

    monkeypatch.setattr(loop, "optimizer_step", spy)
    return seen


@pytest.mark.parametrize(("at", "expected"), [
    ((0, 10), {**dict.fromkeys(range(4), 0), **dict.fromkeys(range(10, 14), 1)}),
    ((0, 2), {0: 0, 1: 0, **dict.fromkeys(range(2, 6), 1)}),  # a new bump replaces the running one
])
def test_the_lr_is_scaled_for_exactly_bump_steps_steps_then_restored(monkeypatch: pytest.MonkeyPatch,
                                                                      at: tuple[int, ...],
                                                                      expected: dict[int, int]) -> None:
    seen = lrs_seen(monkeypatch)
    (bump,) = run_pair([trial("lr-bump", at=at, bump_steps=4)], None)
    steps = seen[loop.WARMUP_STEPS:]
    assert len(steps) == 30
    factors = [r["lr_factor"] for r in bump["teleports"]]
    assert all(f != 1.0 for f in factors)
    assert steps == [0.01 * factors[expected[s]] if s in expected else 0.01 for s in range(30)]


def test_with_factor_1_forced_lr_bump_equals_reset_only_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop.measure_factor
    monkeypatch.setattr(loop, "measure_factor", lambda *args: (1.0, real(*args)[1]))
    reset, bump = run_pair([trial("reset-only"), trial("lr-bump")], None)
    assert curves(reset) == curves(bump) and reset["final_test_loss"] == bump["final_test_loss"]
    monkeypatch.undo()
    reset, bump = run_pair([trial("reset-only"), trial("lr-bump")], None)
    assert curves(reset) != curves(bump)  # the real factor is no 1: the bump changes the trajectory


OLD_FIELDS = ("suite", "case", "arm", "arm_kind", "dataset", "model", "optimizer", "optimizer_label", "teleport",
              "device", "seed", "batch_size", "budget", "eval_every", "target", "eval_batch_size")
OLD_TELEPORT = ("group", "objective", "direction", "steps", "lr", "batch_size", "parametrization", "normalize_step",
                "cap", "tolerance", "state_policy", "schedule", "objective_params")


def _old_id(spec: TrialSpec) -> str:
    """The id as the first trial specs were hashed: none of the fields added since (role, model family,
    bump_steps, ...)."""
    fields = {k: v for k, v in spec.to_dict().items() if k in OLD_FIELDS}
    fields["model"] = {k: v for k, v in fields["model"].items() if k in ("widths", "activation", "negative_slope",
                                                                          "bias")}
    if fields["teleport"] is not None:
        fields["teleport"] = {k: v for k, v in fields["teleport"].items() if k in OLD_TELEPORT}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_trial_ids_of_the_older_arms_are_unchanged() -> None:
    known = {"baseline": "fafaef589bb08762", "teleport": "5e423951506d1a60", "reset-only": "2f93fe35403041b4",
             "random-teleport": "cae5f4a1688db3e1"}  # as the code before lr-bump hashed them
    for kind, old in known.items():
        spec = trial(kind)
        spec = dataclasses.replace(spec, suite="honest", teleport=None if spec.teleport is None else
                                   dataclasses.replace(spec.teleport, lr=1e-2))  # the teleport of test_honest_plans
        assert spec.id == old == _old_id(spec), kind
        if spec.teleport is not None:  # bump_steps means nothing to these arms: it never enters their id
            assert dataclasses.replace(spec, teleport=dataclasses.replace(spec.teleport, bump_steps=3)).id == old
    bump = trial("lr-bump")
    assert bump.id == _old_id(bump)  # at its default, bump_steps stays out of the id
    assert dataclasses.replace(bump, teleport=dataclasses.replace(bump.teleport, bump_steps=3)).id != bump.id


def test_the_committed_quickstart_results_keep_their_trial_ids() -> None:
    """Every trial of reports/quickstart/results.json (teleport and reset-only arms among them) resumes."""
    root = Path(__file__).resolve().parents[1]
    ids = {spec.id for spec in expand(load_suite(root / "suites" / "quickstart.yaml"))}
    trials = json.loads((root / "reports" / "quickstart" / "results.json").read_text())["trials"]
    assert {t["arm_kind"] for t in trials} >= {"teleport", "reset-only"}
    assert all(t["id"] in ids for t in trials)


SUITE = {
    "name": "bump",
    "defaults": {"budget": {"steps": 30}, "eval_every": 10, "seeds": [0, 1], "calibration_seeds": [100],
                 "arms": ["baseline", "teleport", "lr-bump"],
                 "teleport": {"steps": 3, "lr": 0.5, "batch_size": 64, "schedule": {"at_steps": [0, 10]}}},
    "cases": [{"name": "digits", "dataset": {"name": "digits"}, "model": {"widths": [64, 8, 10], "activation": "relu"},
               "optimizers": [{"name": "adam", "lr": 0.01}]}],
}


def write(tmp_path: Path, **defaults: Any) -> Path:
    doc = {**SUITE, "defaults": {**SUITE["defaults"], **defaults}}  # type: ignore[dict-item]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_validation_treats_lr_bump_as_an_arm_that_teleports(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"arms\[1\]\.teleport\.group: group 'linear' needs a identity or linear activation"):
        load_suite(write(tmp_path, arms=["baseline", {"name": "bump", "kind": "lr-bump",
                                                      "teleport": {"group": "linear"}}]))
    with pytest.raises(UserError, match=r"bump_steps applies to lr-bump arms only, not to a teleport arm"):
        load_suite(write(tmp_path, arms=["baseline", {"name": "t", "kind": "teleport", "teleport": {"bump_steps": 3}}]))
    with pytest.raises(UserError, match=r"bump_steps"):
        load_suite(write(tmp_path, arms=["baseline", {"name": "b", "kind": "lr-bump", "teleport": {"bump_steps": 0}}]))
    notes = load_suite(write(tmp_path, teleport={**SUITE["defaults"]["teleport"], "state_policy": "transport"})).notes  # type: ignore[index]
    assert any("an lr-bump arm keeps its optimizer state where the teleport arm transports it" in n for n in notes)
    suite = load_suite(write(tmp_path, teleport={**SUITE["defaults"]["teleport"], "bump_steps": 4}))  # type: ignore[index]
    bumps = [t for t in expand(suite) if t.arm_kind == "lr-bump"]
    assert len(bumps) == 2 and all(t.teleport is not None and t.teleport.bump_steps == 4 for t in bumps)


def test_list_describes_the_bump() -> None:
    tp = TeleportSpec(group="auto", schedule=ScheduleSpec("at_epochs", epochs=(0, 1, 2)))
    assert describe_teleport("lr-bump", tp) == "lr ×(grad-norm factor of auto grad_norm↑ ×10) for 10 steps at " \
                                                "epochs 0,1,2, reset"
    assert describe_teleport("lr-bump", dataclasses.replace(tp, state_policy="transport", bump_steps=3)).endswith(
        "for 3 steps at epochs 0,1,2, keep")


def test_a_suite_with_an_lr_bump_arm_validates_plans_lists_and_runs_to_a_verdict(tmp_path: Path) -> None:
    from telebench.experiments.base import RunRequest
    from telebench.experiments.registry import load_config
    from telebench.experiments.runner import run_experiment

    exp, suite = load_config(write(tmp_path))
    text = io.StringIO()
    exp.show(suite, Console(file=text, width=200), plan=False)
    assert "ok" in text.getvalue()
    exp.show(suite, Console(file=text, width=200), plan=True)
    assert "lr ×(grad-norm factor of rescale grad_norm↑ ×3) for 10 steps at steps 0,10, reset" in text.getvalue()
    out = tmp_path / "out"
    outcome = run_experiment(exp, suite, RunRequest(out_dir=out), Console(file=io.StringIO()))
    rows = {r["arm"]: r for r in outcome.results["summary"]}
    assert rows["lr-bump"]["arm_kind"] == "lr-bump" and rows["lr-bump"]["baseline_arm"] == "baseline"
    assert rows["lr-bump"]["verdict"] is not None and rows["lr-bump"]["n_seeds"] == 2
    bumped = [t for t in outcome.results["trials"] if t["arm_kind"] == "lr-bump"]
    assert all(len(t["teleports"]) == 2 and t["teleports"][0]["lr_factor"] > 0 for t in bumped)
    report = (out / "report.md").read_text()
    assert "lr-bump" in report
