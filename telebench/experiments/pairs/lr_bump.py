"""The `lr-bump` control arm: the teleport's longer step, without the teleport.

A teleport that raises the gradient norm by a factor r = ‖∇L(g·w)‖ / ‖∇L(w)‖ lengthens the optimizer's
next steps by about r, so a teleport arm that trains faster may have found a better point, or may merely
have taken bigger steps. The `lr-bump` arm separates the two. It trains exactly like the baseline (same
initial weights, same batches, same steps) except at the teleport arm's scheduled steps, where it:

1. measures r: it runs `telebench.symmetry.teleport` (mode "optimize", the arm's own teleport settings) on
   a deep copy of its model, with the same teleport batch stream and the same per-(seed, step) generator
   as the teleport arm, so from the same weights it gets the very factor the teleport arm gets. With the
   `grad_norm` objective r is read from the record (its objective is ‖∇L‖², so r is the square root of
   `objective_after / objective_before`); with any other objective the gradient norms are computed on the
   teleport batch before and after. A rejected teleport (or a factor that is not a positive finite number)
   gives r = 1. The model itself is never moved;
2. applies the teleport arm's optimizer-state policy at that step: `reset` restarts the optimizer (as
   `reset-only` does); `keep` and `transport` keep its state (the weights did not move, so transporting
   the state through no move is keeping it);
3. multiplies every param group's lr by r for `bump_steps` optimizer steps (a teleport setting, default
   10), then restores it. A bump that starts while another is running replaces it (the new factor applies
   to the unbumped lr, and the `bump_steps` count starts again).

The measurement is the control's method, so, like a teleport, it runs on the arm's training clock and its
teleport clock: the control pays what the teleport pays. Each one is a row of the arm's `teleports` list:
`step`, `lr_factor`, `bump_steps`, `accepted`, `rejection`, `grad_norm_before`, `grad_norm_after` (at the
proposed point; with another objective than `grad_norm`, null when rejected), and the measured teleport's `group`, `objective`,
`objective_before`, `objective_after`, `steps_taken` and `seconds`. It leaves out the loss and weight
changes, which the arm's own weights never underwent.

With factor 1 at every step an lr-bump arm equals `reset-only` (under `reset`) bit for bit. For adaptive
optimizers (Adam, RMSprop, Adagrad), whose steps barely depend on the gradient's scale, the bump is a
larger step than the teleport gives: read those rows as an upper bound on the step-size effect.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from telebench.experiments.pairs.spec import TeleportSpec

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gradient_norm(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn) -> float:
    """‖∇L‖ over every trainable parameter, on one batch (in float64, so wide models sum without drift)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(model(inputs), targets), params, allow_unused=True)
    return math.sqrt(sum(float(g.detach().double().square().sum()) for g in grads if g is not None))


def measure_factor(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn,
                   tp: TeleportSpec, generator: torch.Generator | None) -> tuple[float, dict[str, Any]]:
    """The factor r a teleport with `tp` would raise ‖∇L‖ by from `model`'s weights (which stay as they are),
    and the row that records it."""
    from telebench.symmetry import teleport

    moved = copy.deepcopy(model)
    direct = tp.objective != "grad_norm"
    before = gradient_norm(moved, inputs, targets, loss_fn) if direct else None
    record = teleport(moved, inputs, targets, loss_fn, mode="optimize", generator=generator, **tp.search_options())
    factor = math.nan  # a rejected teleport, or no finite positive ratio: 1 below
    if direct:
        assert before is not None
        after = gradient_norm(moved, inputs, targets, loss_fn) if record.accepted else None
        if record.accepted and after is not None and before > 0:
            factor = after / before
    else:  # the objective is ‖∇L‖²
        before, after = math.sqrt(max(record.objective_before, 0.0)), math.sqrt(max(record.objective_after, 0.0))
        if record.accepted and record.objective_before > 0:
            factor = math.sqrt(record.objective_after / record.objective_before)
    if not math.isfinite(factor) or factor <= 0:
        factor = 1.0
    row = {"lr_factor": factor, "accepted": record.accepted, "rejection": record.rejection,
           "grad_norm_before": before, "grad_norm_after": after, "group": record.group,
           "objective": record.objective, "objective_before": record.objective_before,
           "objective_after": record.objective_after, "steps_taken": record.steps_taken, "seconds": record.seconds}
    return factor, row


def scale_lrs(optimizer: torch.optim.Optimizer, base_lrs: Sequence[float], factor: float) -> None:
    """Every param group's lr set to its unbumped value times `factor` (1.0 restores it exactly)."""
    for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = lr * factor
