"""Teleport any torch.fx-traceable model along its exact sites: the site path of
:func:`telebench.symmetry.teleport`, which dispatches here for a model that is not an MLP
``nn.Sequential`` or for a site group (``channel-rescale``, ``norm-scale``, ``attention``, ``auto``).

As on the MLP path, the weights are written in place, the loss on the teleport batch is measured
again from the written weights, and the MLP path's acceptance rule (finite, loss change within the
tolerance) decides; a rejected move restores every moved tensor (and eps) bit for bit, and
``rejection`` names the failed check. The record's ``transforms`` hold one entry per site, in the order of the site set:
``layer`` is the site's index, ``left_factor`` its element g and ``right_factor`` g⁻¹: vectors (s, 1/s)
for a diagonal site, block-diagonal ``size × size`` matrices over heads for attention (``left`` and
``right`` are always matrices); :func:`telebench.symmetry.sites.transport.transport_site_state` reads them.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from telebench.symmetry.acceptance import Acceptance, check_bound
from telebench.symmetry.architecture import SymmetryError, parse
from telebench.symmetry.arguments import class_index_loss, forward_failure
from telebench.symmetry.objectives.base import Objective
from telebench.symmetry.objectives.registry import get_objective
from telebench.symmetry.search import SearchOptions
from telebench.symmetry.sites import actions
from telebench.symmetry.sites.discovery import cached_sites, resolve_group
from telebench.symmetry.sites.graph import as_args
from telebench.symmetry.sites.search import (
    Batch,
    LossFn,
    SiteOutcome,
    norm,
    objective_value,
    random_sites,
    search_sites,
)
from telebench.symmetry.sites.site import GROUP_KINDS, Site, SiteSet

SITE_GROUPS = tuple(GROUP_KINDS)
TOLERANCE = {torch.float64: 1e-9}
DEFAULT_TOLERANCE = 1e-4  # float32 and below: a few hundred times the rounding of a teleport

_LAST: weakref.WeakKeyDictionary[nn.Module, SiteSet] = weakref.WeakKeyDictionary()
_MLP: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], bool]] = weakref.WeakKeyDictionary()


def is_site_request(model: nn.Module, group: object) -> bool:
    """Whether ``teleport`` takes the site path: a site group by name, or a model that is not an MLP
    nn.Sequential (a Group instance always takes the MLP path)."""
    if not isinstance(group, str):
        return False
    if group in SITE_GROUPS or not isinstance(model, nn.Sequential):
        return True
    children = tuple(id(m) for m in model)
    known = _MLP.get(model)
    if known is not None and known[0] == children:
        return known[1]
    try:
        parse(model)
        verdict = False
    except SymmetryError:
        verdict = True
    _MLP[model] = (children, verdict)  # a Sequential parses once, not on every MLP teleport
    return verdict


def last_sites(model: nn.Module) -> SiteSet | None:
    """The site set of ``model``'s last accepted site teleport (what its record's transforms index)."""
    return _LAST.get(model)


def _prepare(value: Any, like: Tensor) -> Any:
    if isinstance(value, Tensor):
        if value.is_floating_point():
            return value.to(device=like.device, dtype=like.dtype)
        return value.to(like.device)
    return value


def _no_sites(model: nn.Module, found: SiteSet) -> SymmetryError:
    why = "; ".join(r.describe() for r in found.refused[:3])
    return SymmetryError(f"{type(model).__name__} has no exact {found.group!r} site"
                         + (f" ({why})" if why else "") + "; see find_symmetries(model, inputs).refused.")


def _relative(after: float, before: float) -> float:
    return (after - before) / max(abs(before), 1e-300)


def _check(model: nn.Module, batch: Batch, sites: list[Site], obj: Objective, outcome: SiteOutcome,
           tol: float) -> dict[str, Any]:
    """Write the move, measure loss and objective again from the written weights, restore if rejected."""
    total = math.sqrt(sum(float(p.detach().double().square().sum()) for p in model.parameters()))
    saved = actions.write(model, sites, outcome.elements)
    loss_after, grads = batch.gradients()
    change = _relative(float(loss_after), float(outcome.loss_before))
    params = dict(model.named_parameters())
    moved = sum(float((params[n].detach() - old).double().square().sum()) for n, old in saved.tensors.items()
                if n in params)
    weight_change = math.sqrt(moved) / max(total, 1e-300)
    objective_after = float(objective_value(obj, grads))
    rejection = Acceptance(tol).verdict(change, weight_change, objective_after, None)  # the MLP path's rule
    if rejection is not None:
        actions.restore(model, saved)
    return {"loss_after": float(loss_after), "objective_after": objective_after, "relative_loss_change": change,
            "relative_weight_change": weight_change, "accepted": rejection is None, "rejection": rejection}


def _resolve(model: nn.Module, group: object, objective: str | Objective,
             objective_kwargs: dict[str, Any] | None) -> tuple[str, Objective]:
    if not isinstance(group, str):
        raise SymmetryError(f"a {type(group).__name__} instance acts on MLPs only; on {type(model).__name__} "
                            f"name a site group: {', '.join(SITE_GROUPS)}.")
    obj = get_objective(objective, **(objective_kwargs or {}))
    if not obj.gradient_only:
        raise SymmetryError(f"objective {obj.name!r} is defined on MLPs only; on {type(model).__name__} telebench "
                            "teleports with objectives of the loss gradient alone, such as 'grad_norm'.")
    return resolve_group(group), obj


def teleport_sites(
    model: nn.Module, inputs: Any, targets: Any, loss_fn: LossFn, group: object, objective: str | Objective,
    settings: SearchOptions, mode: str, tolerance: float | None, held_out: tuple[Any, Any] | None,
    generator: torch.Generator | None, objective_kwargs: dict[str, Any] | None, random_scale: float | None,
) -> tuple[dict[str, Any], list[tuple[int, Tensor, Tensor]]]:
    """One teleport on the model's sites for ``group``: the TeleportRecord's fields (but ``transforms``),
    and the per-site moves ``(index, g, g⁻¹)`` when it was accepted. Options as in ``teleport``."""
    name, obj = _resolve(model, group, objective, objective_kwargs)
    check_bound("tolerance", tolerance, allow_zero=True)
    like = next((p for p in model.parameters() if p.is_floating_point()), None)
    if like is None:
        raise SymmetryError(f"{type(model).__name__} has no floating-point parameters to teleport.")
    args = tuple(_prepare(a, like) for a in as_args(inputs))
    try:
        found = cached_sites(model, args, name)
    except SymmetryError as exc:  # untraceable model, or a batch the model cannot take at all: tell which
        bad_batch = forward_failure(model, args)
        if bad_batch is not None:
            raise bad_batch from exc
        raise
    if not found.sites:
        raise _no_sites(model, found)
    sites = list(found.sites)
    batch = Batch.of(model, args, _prepare(targets, like), loss_fn)
    tol = TOLERANCE.get(like.dtype, DEFAULT_TOLERANCE) if tolerance is None else float(tolerance)
    held = None if held_out is None else Batch.of(model, tuple(_prepare(a, like) for a in as_args(held_out[0])),
                                                  _prepare(held_out[1], like), loss_fn)
    held_before = None if held is None else float(held.loss())
    _sync(like.device)
    start = time.perf_counter()
    try:
        if mode == "optimize":
            outcome = search_sites(batch, sites, obj, settings)
        else:
            outcome = random_sites(batch, sites, obj, settings, random_scale, generator)
    except IndexError as exc:  # on CPU, cross-entropy's "Target 12 is out of bounds": n_classes is the output's
        if class_index_loss(loss_fn) is None:
            raise
        raise ValueError(f"targets must be class indices in [0, n_classes) of the model's output, but the loss "
                         f"raised IndexError: {exc}") from exc
    check = _check(model, batch, sites, obj, outcome, tol)
    _sync(like.device)
    seconds = time.perf_counter() - start
    held_after = None if held is None else float(held.loss())
    fields = {
        "group": name, "objective": obj.name, "direction": settings.direction, "mode": mode,
        "loss_before": float(outcome.loss_before), "objective_before": float(outcome.objective_before),
        "algebra_norm": float(norm(outcome.algebra)), "steps_taken": outcome.steps_taken, "seconds": seconds,
        "tolerance": tol, "held_out_loss_before": held_before, "held_out_loss_after": held_after,
        "held_out_relative_loss_change": None if held_before is None or held_after is None
        else _relative(held_after, held_before),
        **check,
    }
    if not check["accepted"]:
        return fields, []
    _LAST[model] = found
    return fields, [(i, *actions.as_factors(s, el)) for i, (s, el) in enumerate(zip(sites, outcome.elements, strict=True))]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
