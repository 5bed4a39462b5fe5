"""Meta-training: unrolled trajectories, truncated back-propagation every k steps, Adam on the LSTMs.

For each training trajectory (a fresh seed: new data and initial weights) the arm optimises the
task for ``steps`` steps. Every ``unroll`` steps the losses of the window are summed into a
meta-loss, back-propagated through the updates and teleports of the window (and through the LSTM
states), the meta-parameters take an Adam step, and the weights and LSTM states are detached so
the next window starts a new graph. As in the reference code the gradients the LSTMs read are
constants (first-order meta-gradients).

The window's meta-loss sums L(W_{t+1}) over its steps t, the loss right after each update and
teleport, so the last move of a window is credited too; ``log`` sums log L instead, so that the
first window's losses (≈ 5·10⁵ on the paper's task) do not drown the later ones (≈ 10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from telebench.experiments.meta.action import relative_change
from telebench.experiments.meta.optimizer import MetaOptimizer
from telebench.experiments.meta.task import DEVICE, Task, TaskSpec, sample_task
from telebench.symmetry.architecture import Params
from telebench.training.clock import Clock

META_LOSSES = ("sum", "log")


@dataclass(frozen=True)
class MetaTrainSpec:
    trajectories: int
    steps: int
    unroll: int
    seed: int = 0  # trajectory i uses task seed ``seed + i``; also seeds the LSTMs' initial weights
    lr_update: float = 1e-3  # Adam on the update LSTM (the reference's lr_meta)
    lr_teleport: float = 1e-4  # Adam on the teleport LSTM (hard-coded 1e-4 in the reference)
    loss: str = "sum"  # one of META_LOSSES

    @property
    def seeds(self) -> range:
        return range(self.seed, self.seed + self.trajectories)


@dataclass
class TeleportLog:
    """Relative loss change of every applied teleport, on the batch and on held-out samples."""

    batch: list[float] = field(default_factory=list)
    heldout: list[float] = field(default_factory=list)

    def record(self, task_loss: Callable[[Params], Tensor], heldout_loss: Callable[[Params], Tensor],
               before: Params, after: Params) -> float:
        with torch.no_grad():
            change = relative_change(task_loss(before), task_loss(after))
            self.batch.append(change)
            self.heldout.append(relative_change(heldout_loss(before), heldout_loss(after)))
        return change


@dataclass
class MetaTrainLog:
    arm: str
    seconds: float  # wall-clock time of the whole meta-training (a training clock), invariance checks included
    meta_steps: int  # Adam steps taken
    trajectory_loss: list[float]  # final loss of each training trajectory: the meta-training curve
    skipped_windows: int  # windows whose meta-loss was not finite (no Adam step was taken)
    teleports: TeleportLog


def _window_loss(loss: Tensor, kind: str) -> Tensor:
    return loss.log() if kind == "log" else loss


def meta_train(optimizer: MetaOptimizer, task_spec: TaskSpec, spec: MetaTrainSpec,
               progress: Callable[[int], None] | None = None) -> MetaTrainLog:
    """Train ``optimizer``'s LSTMs in place; plain GD (nothing to learn) returns an empty log."""
    log = MetaTrainLog(optimizer.arm.name, 0.0, 0, [], 0, TeleportLog())
    if not optimizer.learns:
        return log
    lrs = {"update": spec.lr_update, "teleport": spec.lr_teleport}
    adam = torch.optim.Adam([{"params": params, "lr": lrs[role]} for role, params in optimizer.groups()])
    arch = task_spec.architecture()
    optimizer.train()
    clock = Clock(DEVICE)
    with clock.span("meta_train"):
        for i, seed in enumerate(spec.seeds):
            log.trajectory_loss.append(_trajectory(optimizer, adam, sample_task(task_spec, seed, arch), spec, log))
            if progress is not None:
                progress(i + 1)
    log.seconds = clock.total("meta_train")
    optimizer.eval()
    return log


def _trajectory(optimizer: MetaOptimizer, adam: torch.optim.Optimizer, task: Task, spec: MetaTrainSpec,
                log: MetaTrainLog) -> float:
    """One training trajectory, with an Adam step on the LSTMs every window; its final loss."""
    params: Params = task.init
    state = optimizer.initial_state()
    window: Tensor | None = None
    loss, grads = task.loss_and_grads(params, keep_graph=True)
    for t in range(spec.steps):
        result = optimizer.step(task, params, grads, state)
        if result.teleported is not None:
            log.teleports.record(task.loss, task.heldout_loss, result.updated, result.teleported)
        params, state = result.params, result.state
        loss, grads = task.loss_and_grads(params, keep_graph=True)  # L(W_{t+1}), and the next step's input
        term = _window_loss(loss, spec.loss)
        window = term if window is None else window + term
        if (t + 1) % spec.unroll == 0 or t == spec.steps - 1:
            if torch.isfinite(window):
                adam.zero_grad(set_to_none=True)
                window.backward()
                adam.step()
                log.meta_steps += 1
            else:
                log.skipped_windows += 1
            params = [(w.detach(), None if b is None else b.detach()) for w, b in params]
            state = state.detached()
            window = None
            if not torch.isfinite(loss):
                break  # this trajectory diverged; the next seed starts afresh
    return float(loss.detach())
