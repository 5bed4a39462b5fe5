"""Expansion of a resolved suite into the ordered, hashable plan of trials."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from telebench.experiments.pairs.models import model_spec
from telebench.experiments.pairs.origin import teleport_settings
from telebench.experiments.pairs.schema import ArmConfig, Case, OptimizerConfig, Suite
from telebench.experiments.pairs.spec import TeleportSpec, TrialSpec
from telebench.experiments.pairs.tuning import tuning_trials
from telebench.training.specs import DatasetSpec, OptimizerSpec, freeze


def expand(suite: Suite) -> list[TrialSpec]:
    """The plan, seed-major: for each case, optimizer, device and seed, all arms side by side.

    The arms of one pair_key are adjacent, so an executor can run them interleaved. A `tune_lr` case
    starts each optimizer with its tuning trials (on the first device), and its other trials train with
    the lr they chose (`case.tuned_lr`; the written lr until the tuning stage has resolved it).
    """
    plan: list[TrialSpec] = []
    for case in suite.cases:
        dataset = DatasetSpec(name=case.dataset.name, params=freeze(case.dataset.params))
        model = model_spec(case)
        for opt in case.optimizers:
            lr = case.tuned_lr.get(str(opt.label), opt.lr)
            optimizer = OptimizerSpec(name=opt.name, lr=lr, kwargs=freeze(opt.kwargs))
            baseline = next((arm for arm in case.arms if arm.kind == "baseline"), None)
            for d, device in enumerate(case.devices):
                template = TrialSpec(suite=suite.name, case=case.name, arm="", arm_kind="baseline", dataset=dataset,
                                     model=model, optimizer=optimizer, optimizer_label=str(opt.label), teleport=None,
                                     device=device, seed=0, batch_size=case.batch_size, budget=case.budget.to_spec(),
                                     eval_every=case.eval_every, target=case.target.to_spec(),
                                     eval_batch_size=case.eval_batch_size,
                                     pretrain=case.pretrain.to_spec(opt.lr if case.tune_lr else None)
                                     if case.pretrain else None)
                if d == 0:
                    plan += tuning_trials(case, opt, template)
                if baseline is not None and case.target.value is None:  # a derived target: calibration runs
                    plan += [replace(template, arm=baseline.name, seed=seed, role="calibration")
                             for seed in case.calibration_seeds]
                for seed in case.seeds:
                    plan += [replace(template, arm=arm.name, arm_kind=str(arm.kind), seed=seed,
                                     teleport=_teleport_spec(case, opt, arm)) for arm in case.arms]
    return plan


def count_trials(suite: Suite) -> int:
    """How many trials `expand` would plan, by arithmetic: the plan's size is checked before it is built,
    so a suite of 100,000 seeds × arms is refused without first holding every trial in memory."""
    total = 0
    for case in suite.cases:
        baseline = any(arm.kind == "baseline" for arm in case.arms)
        calibration = len(case.calibration_seeds) if baseline and case.target.value is None else 0
        tuning = len(case.tune_lr.grid) * len(case.calibration_seeds) if case.tune_lr is not None else 0
        per_device = calibration + len(case.seeds) * len(case.arms)
        total += len(case.optimizers) * (tuning + len(case.devices) * per_device)
    return total


def _teleport_spec(case: Case, opt: OptimizerConfig, arm: ArmConfig) -> TeleportSpec | None:
    """What an arm does at its teleport steps. reset-only always restarts the optimizer there,
    whatever policy its teleport settings name: it is the control for the restart alone."""
    if arm.kind == "baseline":
        return None
    spec = teleport_settings(case, opt, arm).to_spec()
    return replace(spec, state_policy="reset") if arm.kind == "reset-only" else spec


def group_pairs(plan: Iterable[TrialSpec]) -> list[list[TrialSpec]]:
    """Arms sharing a pair key, in plan order: the task every executor schedules."""
    pairs: dict[tuple[str, str, str, int], list[TrialSpec]] = {}
    for spec in plan:
        pairs.setdefault(spec.pair_key, []).append(spec)
    return list(pairs.values())


@dataclass
class Plan:
    """Trials to run as they are, without a suite file (benchmarks, tests, a plan built in code)."""

    name: str
    trials: list[TrialSpec]
    description: str = ""
    source: Path = Path("<plan>")
    notes: list[str] = field(default_factory=list)
    executor: str = "local"


def trials_of(config: Suite | Plan) -> list[TrialSpec]:
    return config.trials if isinstance(config, Plan) else expand(config)
