"""Meta-testing: run a (trained or untrained) arm on unseen seeds, on a training clock.

The clock (telebench.training.clock, the training clock every kind uses) covers what an optimizer
pays per step: the gradient, the LSTMs, the update and the teleport. Measuring a teleport's loss
change (two extra forward passes, on the batch and held out) runs off the clock, as DESIGN §4 asks
of every check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from telebench.experiments.meta.optimizer import MetaOptimizer
from telebench.experiments.meta.task import DEVICE, TaskSpec, sample_task
from telebench.experiments.meta.train import TeleportLog
from telebench.training.clock import Clock


@dataclass
class TestRun:
    """One unseen seed: the loss before every step and after the last, against the clock."""

    seed: int
    loss: list[float]  # L(W_t), t = 0 … steps (inf/nan once diverged, and the run stops)
    seconds: list[float]  # training-clock seconds when loss[t] was reached (0 at t = 0)
    teleports: TeleportLog = field(default_factory=TeleportLog)
    step_size: list[float] = field(default_factory=list)  # learned_lr: the step size of each step

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.loss[-1])


def meta_test(optimizer: MetaOptimizer, task_spec: TaskSpec, seeds: Sequence[int], steps: int) -> list[TestRun]:
    """Run ``optimizer`` for ``steps`` steps from each seed's initial weights, without meta-gradients."""
    arch = task_spec.architecture()
    was_training = optimizer.training
    optimizer.eval()
    runs: list[TestRun] = []
    try:
        for seed in seeds:
            task = sample_task(task_spec, seed, arch)
            params = task.init
            state = optimizer.initial_state()
            run = TestRun(seed, [], [0.0])
            clock = Clock(DEVICE)
            for _ in range(steps):
                with clock.span("step"):
                    loss, grads = task.loss_and_grads(params, keep_graph=False)
                    with torch.no_grad():
                        result = optimizer.step(task, params, grads, state)
                run.loss.append(float(loss))  # L(W_t), reached at run.seconds[t]
                run.seconds.append(clock.total("step"))  # W_{t+1} is reached now
                if not math.isfinite(run.loss[-1]):
                    break
                if result.state.step_size is not None:
                    run.step_size.append(float(result.state.step_size))
                if result.teleported is not None:
                    run.teleports.record(task.loss, task.heldout_loss, result.updated, result.teleported)
                params, state = result.params, result.state
            else:
                with torch.no_grad():
                    run.loss.append(float(task.loss(params)))
            if len(run.loss) < len(run.seconds):  # diverged: no later point was reached
                run.seconds.pop()
            runs.append(run)
    finally:
        optimizer.train(was_training)
    return runs
