"""A rough wall-time estimate of a plan, for `telebench list` (good to about ±3x).

A CPU training step of a small MLP costs a fixed overhead plus a cost per sample per parameter.
The constants were fitted on a 2-core CPU with torch 2.14 (fwd+bwd+Adam step, MLPs from 64-32-10
at batch 32 to 3072-128-32-10 at batch 200, within 15 %); CUDA trials get the same estimate,
which overstates them for large models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import pairwise

from telebench.config import registry
from telebench.experiments.pairs.spec import ScheduleSpec, TrialSpec
from telebench.training.specs import thaw

STEP_OVERHEAD_S = 250e-6  # per training step: Python, optimizer bookkeeping, batch slicing
STEP_COST_S = 0.025e-9  # per sample per parameter: forward + backward + step
FORWARD_OVERHEAD_S = 15e-6  # per evaluation chunk
FORWARD_COST_S = 0.009e-9  # per sample per parameter, forward only
TRIAL_SETUP_S = 0.05  # building the model, optimizer, first batches
TRAIN_EVAL_SIZE = 10_000  # the loop measures train loss on at most this many samples
HELD_OUT_SIZE = 2_000  # samples of each teleport's invariance check
GRADS_PER_TELEPORT_STEP = {"gl-data": 4.0}  # gradient evaluations per search step; other groups: 1
UNKNOWN_TRAIN_SIZE = 1_000


def _n_params(widths: tuple[int, ...], bias: bool) -> int:
    return sum(a * b + (b if bias else 0) for a, b in pairwise(widths))


def _teleport_count(schedule: ScheduleSpec, steps_per_epoch: int, total_steps: int) -> int:
    if schedule.kind == "at_steps":
        steps: Iterable[int] = schedule.steps
    elif schedule.kind == "at_epochs":
        steps = (e * steps_per_epoch for e in schedule.epochs)
    elif schedule.kind == "every":
        return len(range(schedule.start, total_steps, max(1, schedule.every)))
    else:
        steps = (e * steps_per_epoch + i for e in schedule.epochs for i in range(schedule.count))
    return sum(1 for s in set(steps) if s < total_steps)


def trial_seconds(spec: TrialSpec) -> float:
    """Estimated wall seconds of one trial: training, teleports and off-clock evaluation."""
    params = _n_params(spec.model.widths, spec.model.bias)
    sizes = registry.dataset_sizes(spec.dataset.name, thaw(spec.dataset.params))
    n_train, n_val = (sizes[0], sizes[1]) if sizes else (UNKNOWN_TRAIN_SIZE, UNKNOWN_TRAIN_SIZE // 4)
    steps_per_epoch = max(1, math.ceil(n_train / spec.batch_size))
    step_s = STEP_OVERHEAD_S + STEP_COST_S * spec.batch_size * params
    if spec.budget.kind == "steps":
        steps = int(spec.budget.value)
    elif spec.budget.kind == "epochs":
        steps = int(round(spec.budget.value * steps_per_epoch))
    else:
        steps = int(spec.budget.value / step_s)
    train_s = steps * step_s
    teleport_s = 0.0
    if spec.teleport is not None and spec.arm_kind in ("teleport", "random-teleport"):
        tp = spec.teleport
        grads = 2.0 if spec.arm_kind == "random-teleport" else 1 + tp.steps * GRADS_PER_TELEPORT_STEP.get(tp.group, 1.0)
        grad_s = STEP_OVERHEAD_S + STEP_COST_S * tp.batch_size * params
        check_s = 2 * (FORWARD_OVERHEAD_S + FORWARD_COST_S * HELD_OUT_SIZE * params)
        teleport_s = _teleport_count(tp.schedule, steps_per_epoch, steps) * (grads * grad_s + check_s)
    evals = steps // spec.eval_every + 1
    n_eval_train = min(n_train, TRAIN_EVAL_SIZE)
    samples = n_eval_train + n_val
    chunks = math.ceil(n_eval_train / spec.eval_batch_size) + math.ceil(n_val / spec.eval_batch_size)
    eval_s = evals * (chunks * FORWARD_OVERHEAD_S + FORWARD_COST_S * samples * params)
    return TRIAL_SETUP_S + train_s + teleport_s + eval_s


def estimate_seconds(plan: Iterable[TrialSpec]) -> float:
    """Estimated wall seconds of a whole plan run sequentially."""
    return sum(trial_seconds(spec) for spec in plan)
