"""``teleport``: move an MLP in place along a symmetry group, check the move, and report what happened.

The search itself lives in :mod:`telebench.symmetry.search`; this module adds the parts a user
relies on: the proposed weights are checked (:mod:`telebench.symmetry.acceptance`: finite, loss on
the teleport batch, size of the move, and optionally the loss on a held-out batch) and only an
accepted move is written in place (so optimizers holding the parameters see it); a rejected one
leaves the weights bit for bit as they were, and the record says why.
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
from telebench.symmetry.acceptance import Acceptance, check_bound, ratio, weight_change_norms
from telebench.symmetry.architecture import Architecture, Params
from telebench.symmetry.arguments import check_teleport
from telebench.symmetry.group_registry import check_model, get_group
from telebench.symmetry.groups import Group
from telebench.symmetry.objectives.base import Objective
from telebench.symmetry.objectives.registry import get_objective
from telebench.symmetry.problem import LossFn, Problem
from telebench.symmetry.search import Outcome, SearchOptions, norm, random_element, search


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


class _LazyFloat:
    """A float field that may be given as a callable, evaluated on first read (the size of a move
    whose per-step factors were kept factored costs a matrix product per step to sum)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.private = "_" + name

    def __get__(self, obj: object, objtype: type | None = None) -> float:
        if obj is None:
            return math.nan  # the field's default
        value = obj.__dict__[self.private]
        if callable(value):
            value = obj.__dict__[self.private] = float(value())
        return float(value)

    def __set__(self, obj: object, value: float | Callable[[], float]) -> None:
        obj.__dict__[self.private] = value


@dataclass
class TeleportRecord:
    """What one teleport did, as numbers. Losses and objectives are on the teleport batch.

    The ``*_after`` numbers describe the proposed point even when it was rejected (``accepted`` is
    False, ``rejection`` says which check failed, the weights were never written and ``transforms``
    is empty). ``relative_loss_change`` is signed, ``(after − before) / |before|``; the tolerance
    applies to its absolute value. ``seconds`` covers everything the method does: the search
    (including a random mode's dry run), the checks (the held-out batch's too, when given) and the
    write. ``max_weight_change`` is the bound on ``relative_weight_change`` that applied (None: none).
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
    steps_taken: int
    seconds: float
    accepted: bool
    tolerance: float
    held_out_loss_before: float | None = None
    held_out_loss_after: float | None = None
    held_out_relative_loss_change: float | None = None
    transforms: list[LayerTransform] = field(default_factory=list)
    rejection: str | None = None  # acceptance.REJECTIONS: the first check that failed
    max_weight_change: float | None = None
    held_out_tolerance: float | None = None
    algebra_norm: _LazyFloat = _LazyFloat()  # ‖Σ_k T_k‖ over all hidden layers: the size of the move in the algebra

    def to_dict(self) -> dict[str, Any]:
        """Every field except the transforms' tensors: plain JSON-able numbers and strings."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "transforms"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _relative(after: float, before: float) -> float:
    return (after - before) / max(abs(before), 1e-300)


def _write(arch: Architecture, params: Params) -> None:
    """Copy the moved weights into the model's parameters, in one fused copy."""
    targets: list[Tensor] = []
    sources: list[Tensor] = []
    for lin, (w, b) in zip(arch.linears, params, strict=True):
        targets.append(lin.weight)
        sources.append(w)
        if b is not None:
            targets.append(lin.bias)
            sources.append(b)
    with torch.no_grad():
        torch._foreach_copy_(targets, sources)


def _prepare_targets(targets: Tensor, like: Tensor) -> Tensor:
    """Targets on the model's device; floating targets (regression) also in its dtype."""
    if targets.is_floating_point():
        return targets.to(device=like.device, dtype=like.dtype)
    return targets.to(like.device)


@dataclass
class _Check:
    """The checks of one proposed move: the numbers around it and the verdict."""

    loss_before: float
    loss_after: float
    objective_after: float
    change: float
    weight_change: float
    held_before: float | None
    held_after: float | None
    rejection: str | None

    @property
    def accepted(self) -> bool:
        return self.rejection is None


def _check(problem: Problem, obj: Objective, outcome: Outcome, rule: Acceptance,
           held: Problem | None, held_before: float | None) -> _Check:
    """Measure the proposed weights (the loss and objective there, the size of the move, the
    held-out loss) and apply the acceptance rule; nothing is written here."""
    with phases.span(phases.INVARIANCE_CHECK), torch.no_grad():
        after = outcome.after if outcome.after is not None else obj.evaluate(problem, outcome.params, create_graph=False)
        loss_after_t = after.loss if after.loss is not None else problem.head_loss(outcome.params)
        norms = weight_change_norms(problem.start, outcome.params)
        held_after = None if held is None else float(held.loss(outcome.params))
        scalars = torch.stack([outcome.loss_before, loss_after_t, after.value]).to(norms.dtype)
        loss_before, loss_after, objective_after, size_change, size = torch.cat([scalars, norms]).tolist()  # one read
        change = _relative(loss_after, loss_before)
        held_change = None if held_after is None or held_before is None else _relative(held_after, held_before)
        moved = ratio(size_change, size)
        rejection = rule.verdict(change, moved, objective_after, held_change)
    return _Check(loss_before, loss_after, objective_after, change, moved, held_before, held_after, rejection)


def _record(grp: Group, obj: Objective, direction: str, mode: str, outcome: Outcome, check: _Check,
            seconds: float, rule: Acceptance) -> TeleportRecord:
    """The record of one teleport; the transforms only when the move was kept (composed when read)."""
    held_change = (None if check.held_after is None or check.held_before is None
                   else _relative(check.held_after, check.held_before))
    return TeleportRecord(
        group=grp.name,
        objective=obj.name,
        direction=direction,
        mode=mode,
        loss_before=check.loss_before,
        loss_after=check.loss_after,
        objective_before=float(outcome.objective_before),
        objective_after=check.objective_after,
        relative_loss_change=check.change,
        relative_weight_change=check.weight_change,
        algebra_norm=lambda: float(norm(outcome.algebra)),
        steps_taken=outcome.steps_taken,
        seconds=seconds,
        accepted=check.accepted,
        tolerance=rule.tolerance,
        held_out_loss_before=check.held_before,
        held_out_loss_after=check.held_after,
        held_out_relative_loss_change=held_change,
        transforms=[LayerTransform(m, outcome.factors.left(m), outcome.factors.right(m))
                    for m in range(len(outcome.factors.widths))] if check.accepted else [],
        rejection=check.rejection,
        max_weight_change=None if math.isinf(rule.max_weight_change) else rule.max_weight_change,
        held_out_tolerance=rule.held_out_tolerance,
    )


def _rule(grp: Group, dtype: torch.dtype, tolerance: float | None, max_weight_change: float | None,
          held_out_tolerance: float | None, held_out: object) -> Acceptance:
    check_bound("tolerance", tolerance, allow_zero=True)
    check_bound("max_weight_change", max_weight_change, allow_zero=True)
    check_bound("held_out_tolerance", held_out_tolerance, allow_zero=True)
    if held_out_tolerance is not None and held_out is None:
        raise ValueError("held_out_tolerance needs a held-out batch: pass held_out=(x, y) as well.")
    tol = grp.default_tolerance(dtype) if tolerance is None else float(tolerance)
    bound = grp.default_max_weight_change(dtype) if max_weight_change is None else float(max_weight_change)
    return Acceptance(tol, bound, None if held_out_tolerance is None else float(held_out_tolerance))


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
    max_weight_change: float | None = None,
    held_out_tolerance: float | None = None,
) -> TeleportRecord:
    """Teleport ``model`` (an nn.Sequential MLP) in place along a symmetry group; return what happened.

    ``loss_fn(model(inputs), targets)`` must return a scalar. ``group``: "rescale", "linear" or
    "gl-data" (or a Group). ``objective``: "grad_norm" (or an Objective), raised or lowered per
    ``direction`` by ``steps`` steps of size ``lr`` (each normalised to norm ``lr`` with
    ``normalize_step``). ``parametrization``: g = exp(T), or g = I + T with an exact inverse.
    ``cap`` stops the search once the objective reaches it (one host read per step).
    ``mode="random"`` instead applies one random element of the size an optimising teleport would
    take from here (the control arm; ``random_scale`` fixes that size).

    The move is written only if it passes the acceptance rule (:mod:`telebench.symmetry.acceptance`,
    docs/teleport-acceptance.md): everything finite; relative loss change on ``inputs`` within
    ``tolerance`` (default: the group's, for the model's dtype); relative weight change within
    ``max_weight_change`` (default: the group's: none for the exact groups, 3 for gl-data); and,
    with ``held_out=(x, y)`` and ``held_out_tolerance``, relative loss change on the held-out batch
    within that. Otherwise the weights stay bit for bit as they were, ``accepted`` is False and
    ``rejection`` names the failed check. ``held_out`` alone measures the held-out loss before and
    after without judging it. All of it runs on the teleport's clock (``seconds``).

    Every argument is checked first (:mod:`telebench.symmetry.arguments`), and nothing is written
    when a check fails. ValueError, one sentence naming the argument: an option of the wrong type or
    range; an empty batch; for an MLP, ``inputs`` that are not floating point or not ``(batch,
    in_features)``; ``targets`` without one row per input, or class indices that are not int64 in
    ``[0, n_classes)`` for cross-entropy; NaN or inf in the weights, inputs or floating targets; a
    batch on another device than the model, or one the model cannot run on. SymmetryError (a
    ValueError): the group cannot act on the model, or its weights are not all float32 or all
    float64 on one device.
    """
    settings = SearchOptions(steps, lr, direction, normalize_step, cap, parametrization)
    from telebench.symmetry.sites.teleport import (  # any torch.fx-traceable model
        is_site_request,
        teleport_sites,
    )

    site = is_site_request(model, group)
    check_teleport(model, inputs, targets, loss_fn, held_out, settings, mode, site, tolerance=tolerance,
                   max_weight_change=max_weight_change, held_out_tolerance=held_out_tolerance,
                   random_scale=random_scale)
    if site:  # not an MLP nn.Sequential, or a site group: docs/real-models.md
        if max_weight_change is not None or held_out_tolerance is not None:
            raise ValueError("max_weight_change and held_out_tolerance apply to MLP teleports only, not to site groups.")
        fields_, moves = teleport_sites(model, inputs, targets, loss_fn, group, objective, settings, mode, tolerance,
                                        held_out, generator, objective_kwargs, random_scale)
        return TeleportRecord(**fields_, transforms=[LayerTransform(*m) for m in moves])
    return _teleport_mlp(model, inputs, targets, loss_fn, group, objective, settings, mode, generator,
                         objective_kwargs, random_scale, held_out,
                         _Limits(tolerance, max_weight_change, held_out_tolerance))


@dataclass(frozen=True)
class _Limits:
    tolerance: float | None
    max_weight_change: float | None
    held_out_tolerance: float | None


def _teleport_mlp(model: nn.Module, inputs: Tensor, targets: Tensor, loss_fn: LossFn, group: str | Group,
                  objective: str | Objective, settings: SearchOptions, mode: str, generator: torch.Generator | None,
                  objective_kwargs: dict[str, Any] | None, random_scale: float | None,
                  held_out: tuple[Tensor, Tensor] | None, limits: _Limits) -> TeleportRecord:
    """The MLP path of :func:`teleport`: search, check against the acceptance rule, write, record."""
    direction = settings.direction
    tolerance, max_weight_change, held_out_tolerance = limits.tolerance, limits.max_weight_change, \
        limits.held_out_tolerance
    grp = get_group(group)
    arch = check_model(model, grp)
    obj = get_objective(objective, **(objective_kwargs or {}))
    weight = arch.linears[0].weight
    rule = _rule(grp, weight.dtype, tolerance, max_weight_change, held_out_tolerance, held_out)

    _sync(weight.device)
    start = time.perf_counter()
    problem = Problem(arch, arch.prepare_inputs(inputs), _prepare_targets(targets, weight), loss_fn)
    held = None if held_out is None else Problem(arch, arch.prepare_inputs(held_out[0]),
                                                 _prepare_targets(held_out[1], weight), loss_fn)
    with torch.no_grad():
        held_before = None if held is None else float(held.loss(problem.start))
    obj.setup(problem, grp, generator)
    if mode == "optimize":
        outcome = search(problem, grp, obj, settings)
    else:
        outcome = random_element(problem, grp, obj, settings, random_scale, generator)
    check = _check(problem, obj, outcome, rule, held, held_before)
    if check.accepted:
        with phases.span(phases.APPLY):
            _write(arch, outcome.params)
    _sync(weight.device)
    seconds = time.perf_counter() - start
    return _record(grp, obj, direction, mode, outcome, check, seconds, rule)
