"""`telebench run` for a `kind: meta` suite: meta-train every arm, test on unseen seeds, write the report.

Per case: every arm is built from one seed, tested untrained, meta-trained, then all arms are
tested again interleaved seed by seed (after an untimed warm-up), so drift in the machine's speed
hits every arm alike. results.json and report.md are written atomically at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from rich.progress import Progress

from telebench.experiments.meta.evaluate import TestRun, meta_test
from telebench.experiments.meta.optimizer import MetaOptimizer, TeleportApply
from telebench.experiments.meta.suite import MetaCase
from telebench.experiments.meta.task import DEVICE
from telebench.experiments.meta.train import MetaTrainLog, meta_train
from telebench.render.meta import change_summary
from telebench.training.clock import Clock
from telebench.training.heap import paused

WARMUP_STEPS = 5


def build_arm(case: MetaCase, index: int) -> MetaOptimizer:
    """Arm ``index`` of ``case`` with its LSTMs initialised from ``meta_train.seed`` (global RNG untouched)."""
    from telebench.symmetry import get_group

    task = case.task.to_spec()
    apply = TeleportApply(get_group(case.teleport.group), case.teleport.parametrization, case.teleport.magnitude)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.meta_train.seed)
        return MetaOptimizer(case.arms[index].to_spec(), task.architecture(), case.lstm.to_spec(), apply)


def _significant(values: list[float], digits: int) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in values]


def _runs(runs: list[TestRun], brief: bool = False) -> list[dict[str, Any]]:
    """Test runs as plain data. Losses keep every digit (two runs of one seed must match exactly);
    clock readings are kept to 0.1 µs, invariance errors to 3 digits, so the file stays small.
    ``brief`` (untrained runs) keeps the loss curve only."""
    if brief:
        return [{"seed": r.seed, "loss": r.loss} for r in runs]
    return [{"seed": r.seed, "loss": r.loss, "seconds": [round(t, 7) for t in r.seconds],
             "teleport_batch": _significant(r.teleports.batch, 3),
             "teleport_heldout": _significant(r.teleports.heldout, 3),
             "step_size": _significant(r.step_size, 4)} for r in runs]


def _train_record(log: MetaTrainLog, tolerance: float) -> dict[str, Any]:
    """Meta-training in brief: its teleports are summarised (tens of thousands of them), not listed."""
    return {"seconds": log.seconds, "meta_steps": log.meta_steps, "skipped_windows": log.skipped_windows,
            "trajectory_loss": log.trajectory_loss,
            "teleport": {"batch": change_summary(log.teleports.batch, tolerance),
                         "heldout": change_summary(log.teleports.heldout, tolerance)}}


def _bar(progress: Progress | None, description: str, total: int) -> Callable[[int], None] | None:
    """A bar of ``progress`` that a callback fills to n of ``total`` (None without a progress display)."""
    if progress is None:
        return None
    bar = progress.add_task(description, total=total)

    def update(n: int) -> None:
        progress.update(bar, completed=n)

    return update


def run_case(case: MetaCase, progress: Progress | None = None) -> dict[str, Any]:
    """Meta-train and test every arm of one case; the plain-data record the report reads."""
    from telebench.symmetry import get_group

    task = case.task.to_spec()
    group = get_group(case.teleport.group)
    tolerance = group.default_tolerance(task.torch_dtype)
    seeds, steps = case.test.seeds, case.test.steps
    arms = [build_arm(case, k) for k in range(len(case.arms))]
    untrained = {opt.arm.name: meta_test(opt, task, seeds, steps) for opt in arms if opt.learns}
    logs: dict[str, MetaTrainLog] = {}
    for opt in arms:
        bar = _bar(progress if opt.learns else None, f"{case.name} / {opt.arm.name}: meta-training",
                   case.meta_train.trajectories)
        logs[opt.arm.name] = meta_train(opt, task, case.meta_train.to_spec(), bar)
    tested: dict[str, list[TestRun]] = {opt.arm.name: [] for opt in arms}
    wall = Clock(DEVICE)
    with wall.span("test"):
        with paused(freeze=True):  # the warm-up; then no full collection of the heap lands on a timed step
            for opt in arms:
                meta_test(opt, task, seeds[:1], min(WARMUP_STEPS, steps))
        for seed in seeds:
            for opt in arms:
                tested[opt.arm.name] += meta_test(opt, task, [seed], steps)
    test_wall = wall.total("test")
    return {
        "name": case.name,
        "config": case.model_dump(mode="json"),
        "group": {"name": group.name, "exact": group.exact,
                  "tolerance": tolerance},
        "test_wall_seconds": test_wall,
        "arms": [
            {**asdict(opt.arm), "meta_parameters": sum(p.numel() for p in opt.parameters()),
             "meta_train": _train_record(logs[opt.arm.name], tolerance),
             "untrained": _runs(untrained[opt.arm.name], brief=True) if opt.arm.name in untrained else None,
             "test": _runs(tested[opt.arm.name])}
            for opt in arms
        ],
    }
