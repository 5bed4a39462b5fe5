"""``teleport``: move an MLP in place along a symmetry group, check the loss, and report what happened.

The search itself lives in :mod:`telebench.symmetry.search`; this module adds the parts a user
relies on: the weights are written in place (so optimizers holding the parameters see the move),
the loss on the teleport batch is measured again from the written weights, and a change beyond the
tolerance restores the old weights bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from telebench.symmetry import phases
from telebench.symmetry.architecture import Architecture, Params, flat
from telebench.symmetry.group_registry import check_model, get_group
from telebench.symmetry.groups import PARAMETRIZATIONS, Group
from telebench.symmetry.objectives.base import Objective
from telebench.symmetry.objectives.registry import get_objective
from telebench.symmetry.problem import LossFn, Problem
from telebench.symmetry.search import Outcome, SearchOptions, norm, random_element, search

DIRECTIONS = ("increase", "decrease")
MODES = ("optimize", "random")


class LayerTransform:
    """The net group element applied at hidden layer ``layer`` (the output of the ``layer``-th
    nn.Linear, counting Linear layers only), composed over all steps of one teleport.

    The weights moved as ``W_m' = left @ W_m``, ``b_m' = left @ b_m`` and ``W_{m+1}' = W_{m+1} @ right``;
    when hidden layers m-1 and m both moved, ``W_m' = left_m @ W_m @ right_{m-1}``. Up to rounding:

    * rescale: ``left = diag(s)``, ``right = diag(1/s)``, exact inverses;
    * linear: ``left = g``, ``right = g⁻¹``, exact inverses;
    * gl-data: ``left = g_K ⋯ g_1`` and ``right = A_1 ⋯ A_K``, with ``A_k`` step k's least-squares
      matrix (``A ≈ σ(Z) σ(gZ)⁺`` on the teleport batch). ``right`` is not ``left⁻¹``: it is the
      linear map that carried the new hidden activations back to the old ones on that batch, the
      linearisation an optimizer-state transport should use for ``W_{m+1}``.

    Storage: ``left_factor`` and ``right_factor`` are what the teleport keeps, a vector (the diagonal)
    for diagonal groups and a matrix otherwise; a search that kept only its per-step factors
    composes them on the first read. ``left`` and ``right`` are always matrices, formed from a
    vector on each read (``width × width``: read the factors for wide layers).
    """

    def __init__(self, layer: int, left: Tensor | Callable[[], Tensor], right: Tensor | Callable[[], Tensor]) -> None:
        self.layer = layer
        self._left, self._right = left, right

    @staticmethod
    def _get(value: Tensor | Callable[[], Tensor]) -> Tensor:
        return value if isinstance(value, Tensor) else value()

    @property
    def left_factor(self) -> Tensor:
        return self._get(self._left)

    @property
    def right_factor(self) -> Tensor:
        return self._get(self._right)

    @property
    def diagonal(self) -> bool:
        return self.left_factor.dim() == 1

    @property
    def left(self) -> Tensor:
        f = self.left_factor
        return torch.diag(f) if f.dim() == 1 else f

    @property
    def right(self) -> Tensor:
        f = self.right_factor
        return torch.diag(f) if f.dim() == 1 else f

    def __repr__(self) -> str:
        return f"LayerTransform(layer={self.layer})"


@dataclass
class TeleportRecord:
    """What one teleport did, as numbers. Losses and objectives are on the teleport batch.

    The ``*_after`` numbers describe the proposed point even when it was rejected (``accepted`` is
    False, the weights were restored and ``transforms`` is empty). ``relative_loss_change`` is signed,
    ``(after − before) / |before|``; the tolerance applies to its absolute value. ``seconds`` covers the
    search (including a random mode's dry run), the write, the invariance check and any restore, but
    not the held-out evaluation.
    """

    group: str
    objective: str
    direction: str
    mode: str
    loss_before: float
    loss_after: float
    objective_before: float
    objective_after: float
    relative_loss_change: float
    relative_weight_change: float  # ‖w' − w‖ / ‖w‖ over every Linear weight and bias
    algebra_norm: float  # ‖Σ_k T_k‖ over all hidden layers: the size of the move in the Lie algebra
    steps_taken: int
    seconds: float
    accepted: bool
    tolerance: float
    held_out_loss_before: float | None = None
    held_out_loss_after: float | None = None
    held_out_relative_loss_change: float | None = None
    transforms: list[LayerTransform] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Every field except the transforms' tensors: plain JSON-able numbers and strings."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "transforms"}


def _validate(settings: SearchOptions, mode: str) -> None:
    if settings.direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {settings.direction!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if settings.parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {settings.parametrization!r}.")
    if not isinstance(settings.steps, int) or settings.steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {settings.steps!r}.")
    if not (settings.lr > 0 and math.isfinite(settings.lr)):
        raise ValueError(f"lr must be a positive finite number, got {settings.lr!r}.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _relative(after: float, before: float) -> float:
    return (after - before) / max(abs(before), 1e-300)


def _flatten(params: Params) -> Tensor:
    return torch.cat([t.reshape(-1) for t in flat(params)])


def _write(arch: Architecture, params: Params) -> None:
    with torch.no_grad():
        for lin, (w, b) in zip(arch.linears, params, strict=True):
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)


def _restore(arch: Architecture, saved: Tensor) -> None:
    """Write back the flat copy taken before the move: the same bits, into the same tensors."""
    offset = 0
    with torch.no_grad():
        for live in flat(arch.params()):
            live.copy_(saved[offset : offset + live.numel()].view_as(live))
            offset += live.numel()


def _prepare_targets(targets: Tensor, like: Tensor) -> Tensor:
    """Targets on the model's device; floating targets (regression) also in its dtype."""
    if targets.is_floating_point():
        return targets.to(device=like.device, dtype=like.dtype)
    return targets.to(like.device)


def _held_out_loss(arch: Architecture, params: Params, held_out: tuple[Tensor, Tensor], loss_fn: LossFn) -> float:
    x, y = held_out
    with torch.no_grad():
        return float(Problem(arch, arch.prepare_inputs(x), _prepare_targets(y, arch.linears[0].weight), loss_fn).loss(params))


@dataclass
class _Check:
    """The invariance check of one written move: the loss around it and whether the move was kept."""

    loss_before: float
    loss_after: float
    objective_after: Tensor  # read on the host only after the clock stops
    change: float
    weight_change: float
    accepted: bool


def _apply_and_check(arch: Architecture, problem: Problem, obj: Objective, outcome: Outcome, tol: float) -> _Check:
    """Write the move in place, measure the loss again from the written weights, and restore the
    saved copy bit for bit when it moved beyond ``tol``, so a rejected move leaves no trace."""
    with phases.span(phases.APPLY):
        saved = _flatten(arch.params())  # a copy: restoring from it is bit for bit
        _write(arch, outcome.params)
    with phases.span(phases.INVARIANCE_CHECK):
        after = outcome.after if outcome.after is not None else obj.evaluate(problem, arch.params(), create_graph=False)
        loss_after_t = after.loss if after.loss is not None else problem.loss(arch.params())
        loss_before, loss_after = float(outcome.loss_before), float(loss_after_t.detach())
        change = _relative(loss_after, loss_before)
        delta = _flatten(outcome.params) - saved
        weight_change = float(torch.linalg.vector_norm(delta) / torch.linalg.vector_norm(saved))
        accepted = math.isfinite(change) and math.isfinite(weight_change) and abs(change) <= tol
        if not accepted:
            _restore(arch, saved)
    return _Check(loss_before, loss_after, after.value, change, weight_change, accepted)


def _held_out_change(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else _relative(after, before)


def _record(
    grp: Group,
    obj: Objective,
    direction: str,
    mode: str,
    outcome: Outcome,
    check: _Check,
    seconds: float,
    tol: float,
    held_before: float | None,
    held_after: float | None,
) -> TeleportRecord:
    """The record of one teleport; the composed transforms only when the move was kept."""
    return TeleportRecord(
        group=grp.name,
        objective=obj.name,
        direction=direction,
        mode=mode,
        loss_before=check.loss_before,
        loss_after=check.loss_after,
        objective_before=float(outcome.objective_before),
        objective_after=float(check.objective_after),
        relative_loss_change=check.change,
        relative_weight_change=check.weight_change,
        algebra_norm=float(norm(outcome.algebra)),
        steps_taken=outcome.steps_taken,
        seconds=seconds,
        accepted=check.accepted,
        tolerance=tol,
        held_out_loss_before=held_before,
        held_out_loss_after=held_after,
        held_out_relative_loss_change=_held_out_change(held_after, held_before),
        transforms=[LayerTransform(m, outcome.factors.left(m), outcome.factors.right(m))
                    for m in range(len(outcome.factors.widths))] if check.accepted else [],
    )


def teleport(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFn,
    group: str | Group = "rescale",
    objective: str | Objective = "grad_norm",
    direction: str = "increase",
    steps: int = 10,
    lr: float = 1e-2,
    mode: str = "optimize",
    parametrization: str = "exp",
    normalize_step: bool = False,
    cap: float | None = None,
    tolerance: float | None = None,
    held_out: tuple[Tensor, Tensor] | None = None,
    generator: torch.Generator | None = None,
    objective_kwargs: dict[str, Any] | None = None,
    random_scale: float | None = None,
) -> TeleportRecord:
    """Teleport ``model`` (an nn.Sequential MLP) in place along a symmetry group; return what happened.

    ``loss_fn(model(inputs), targets)`` must return a scalar. ``group``: "rescale", "linear" or
    "gl-data" (or a Group). ``objective``: "grad_norm" (or an Objective), raised or lowered per
    ``direction`` by ``steps`` steps of size ``lr`` (each normalised to norm ``lr`` with
    ``normalize_step``). ``parametrization``: g = exp(T), or g = I + T with an exact inverse.
    ``cap`` stops the search once the objective reaches it (one host read per step).
    ``mode="random"`` instead applies one random element of the size an optimising teleport would
    take from here (the control arm; ``random_scale`` fixes that size). If the relative loss change
    on ``inputs`` exceeds ``tolerance`` (default: the group's, for the model's dtype) the weights
    are restored bit for bit and ``accepted`` is False. ``held_out=(x, y)`` also measures the loss
    there, before and after, off the clock. Raises SymmetryError if the group cannot act on the
    model, ValueError for a bad option.
    """
    settings = SearchOptions(steps, lr, direction, normalize_step, cap, parametrization)
    _validate(settings, mode)
    grp = get_group(group)
    arch = check_model(model, grp)
    obj = get_objective(objective, **(objective_kwargs or {}))
    weight = arch.linears[0].weight
    problem = Problem(arch, arch.prepare_inputs(inputs), _prepare_targets(targets, weight), loss_fn)
    tol = grp.default_tolerance(weight.dtype) if tolerance is None else float(tolerance)
    held_before = None if held_out is None else _held_out_loss(arch, arch.params(), held_out, loss_fn)

    _sync(weight.device)
    start = time.perf_counter()
    obj.setup(problem, grp, generator)
    if mode == "optimize":
        outcome = search(problem, grp, obj, settings)
    else:
        outcome = random_element(problem, grp, obj, settings, random_scale, generator)
    check = _apply_and_check(arch, problem, obj, outcome, tol)
    _sync(weight.device)
    seconds = time.perf_counter() - start

    held_after = None if held_out is None else _held_out_loss(arch, outcome.params, held_out, loss_fn)
    return _record(grp, obj, direction, mode, outcome, check, seconds, tol, held_before, held_after)
