"""When a teleport is kept: the acceptance rule, its checks, and why a move was turned down.

A proposed move ``w ↦ w'`` is accepted only if all of these hold (docs/teleport-acceptance.md):

1. **finite**: the loss, the objective and every weight at ``w'`` are finite (and the held-out loss,
   when measured);
2. **loss**: ``|L(w') − L(w)| / |L(w)| ≤ tolerance`` on the teleport batch (default: the group's, per
   dtype: a few hundred roundings for the exact groups, 1e-2 for gl-data);
3. **size**: ``‖w' − w‖ / ‖w‖ ≤ max_weight_change`` (default: unbounded for the exact groups, whose
   moves preserve the function however far they go; :data:`GL_DATA_MAX_WEIGHT_CHANGE` for gl-data,
   whose moves only preserve the loss on the batch and whose large moves wreck training);
4. **held out** (only when asked, with ``held_out`` and ``held_out_tolerance``): the loss on a
   held-out batch moves by at most ``held_out_tolerance``, relatively.

The checks run in that order and the first that fails names the rejection (:data:`REJECTIONS`).
A rejected move is never written, so the weights stay bit for bit what they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from telebench.symmetry.architecture import Params, flat

NON_FINITE, LOSS_CHANGE, WEIGHT_CHANGE, HELD_OUT_LOSS_CHANGE = (
    "non-finite", "loss-change", "weight-change", "held-out-loss-change")
REJECTIONS = (NON_FINITE, LOSS_CHANGE, WEIGHT_CHANGE, HELD_OUT_LOSS_CHANGE)
"""Why a teleport was rejected: the first acceptance check it failed."""

GL_DATA_MAX_WEIGHT_CHANGE = 3.0
"""Default bound on ‖w' − w‖/‖w‖ for gl-data teleports, chosen from measured runs on the paper's
optimizer schedule (benchmarks/teleport_acceptance.py; docs/teleport-acceptance.md has the tables):
on Fashion-MNIST with 784-16-10-10 and 784-256-256-10 MLPs, runs whose largest accepted move stayed
below 3× the weights' norm ended no worse than the same seed without teleports in 25 of 29 cases,
while every run with a move of 10× or more (up to 2,670×) ended worse, by +0.50 in median
validation loss; in the committed paper-optimizers journal every run with a move of 4.8× or more
ended worse. 3 keeps the first group and leaves a margin below the second."""


@dataclass(frozen=True)
class Acceptance:
    """The acceptance rule of one teleport (see the module docstring); ``math.inf`` disables a bound."""

    tolerance: float
    max_weight_change: float = math.inf
    held_out_tolerance: float | None = None

    def verdict(self, loss_change: float, weight_change: float, objective_after: float,
                held_out_change: float | None) -> str | None:
        """The rejection (one of :data:`REJECTIONS`), or None to accept."""
        values = [loss_change, weight_change, objective_after]
        if held_out_change is not None:
            values.append(held_out_change)
        if not all(math.isfinite(v) for v in values):
            return NON_FINITE
        if abs(loss_change) > self.tolerance:
            return LOSS_CHANGE
        if weight_change > self.max_weight_change:
            return WEIGHT_CHANGE
        if self.held_out_tolerance is not None and held_out_change is not None:
            if abs(held_out_change) > self.held_out_tolerance:
                return HELD_OUT_LOSS_CHANGE
        return None


def check_bound(name: str, value: float | None, allow_zero: bool) -> None:
    """ValueError unless ``value`` is None or a non-negative (positive, unless ``allow_zero``) number."""
    if value is None:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}.")


def weight_change_norms(before: Params, after: Params) -> Tensor:
    """``[‖w' − w‖, ‖w‖]`` over every weight and bias, from one fused reduction (NaN or inf where w'
    is not finite); the relative change is their :func:`ratio`."""
    old, new = flat(before), flat(after)
    norms = torch.stack(torch._foreach_norm([*torch._foreach_sub(new, old), *old])).view(2, len(old))
    return torch.linalg.vector_norm(norms, dim=1)


def ratio(change: float, size: float) -> float:
    """change / size, with IEEE's NaN for 0/0 and inf for x/0 (a model whose weights are all zero)."""
    if size == 0:
        return math.nan if change == 0 else math.inf
    return change / size
