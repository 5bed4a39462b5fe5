"""The teleport search: K steps of gradient ascent or descent on the Lie algebra, each from the identity.

Each step computes ∂f/∂T at T = 0 for the objective f at ``g(T)·w``, steps ``T = ±lr·∂f/∂T`` and
applies ``g(T)``, as in the paper. Three paths compute exactly that:

* **covariant** (exact groups with gradient-only objectives, e.g. rescale or linear with
  ``grad_norm``; :mod:`telebench.symmetry.covariant`): one gradient at w. Since L(g·w) = L(w) for
  every input, ∇L(g·w) follows from ∇L(w) by matrix algebra, so the K steps make no further pass
  over the batch;
* **gl-data with grad_norm** (:mod:`telebench.symmetry.gl_search`): the generic path's numbers from
  one fused gradient, Hessian-vector product and pull-back per step, on batch-shaped factors;
* **generic** (any group and objective): per step, the objective's gradient w.r.t. the weights
  (for ``grad_norm`` a Hessian-vector product), pulled back into the algebra through the
  derivative of the group action at the identity.

Every path records each step's factors (:class:`~telebench.symmetry.factors.Steps`) and composes
them only when asked.

Nothing here reads a tensor on the host inside the K steps unless a ``cap`` asks for it (on CPU
the ``exp`` parametrisation reads one norm per step, which costs nothing there).
"""

from __future__ import annotations

import torch

from telebench.symmetry import phases
from telebench.symmetry.covariant import covariant
from telebench.symmetry.factors import Steps
from telebench.symmetry.gl_data import GLDataGroup
from telebench.symmetry.gl_search import gl_grad_norm_search
from telebench.symmetry.groups import Element, ExactGroup, Group
from telebench.symmetry.objectives.base import Objective
from telebench.symmetry.objectives.grad_norm import GradNorm
from telebench.symmetry.problem import Forward, Problem
from telebench.symmetry.search_types import Outcome, SearchOptions, capped, norm

__all__ = ["Outcome", "SearchOptions", "norm", "random_element", "search"]


def _step(grad: Element, settings: SearchOptions) -> Element:
    """±lr·∇, or ±lr·∇/‖∇‖ with ``normalize_step``."""
    scale: float | torch.Tensor = settings.lr if settings.direction == "increase" else -settings.lr
    if settings.normalize_step:
        n = norm(grad)
        scale = scale / n.clamp_min(torch.finfo(n.dtype).tiny)
    return [scale * d for d in grad]


def search(problem: Problem, group: Group, objective: Objective, settings: SearchOptions) -> Outcome:
    """Run the K-step search from the model's current weights (which it does not modify)."""
    _ = problem.head  # choose the loss head now: it may read the targets once, before the loop
    if isinstance(group, ExactGroup) and objective.gradient_only:
        return covariant(problem, group, objective, settings)
    if type(group) is GLDataGroup and type(objective) is GradNorm:
        return gl_grad_norm_search(problem, settings)
    return _generic(problem, group, objective, settings)


def _generic(problem: Problem, group: Group, objective: Objective, settings: SearchOptions) -> Outcome:
    arch = problem.arch
    params = problem.start
    like = params[0][0]
    lefts, rights = group.identity(arch, like), group.identity(arch, like)
    record = Steps(arch.widths, like, group.diagonal)
    first = None
    state = None
    taken = 0
    for _ in range(settings.steps):
        if state is None:
            with phases.span(phases.GROUP_ACTION):
                state = group.prepare(arch, params, problem.inputs)
        forward = state if isinstance(state, Forward) else None
        ev, dparams = objective.value_and_gradient(
            problem, params, forward, value=first is None or settings.cap is not None
        )
        first = ev if first is None else first
        if ev is not None and capped(ev.value, settings):
            break
        with phases.span(phases.OBJECTIVE_GRAD):
            t = _step(group.pullback(arch, params, state, dparams), settings)
        with phases.span(phases.APPLY), torch.no_grad():
            g, g_inv = group.element(t, settings.parametrization)
            params, right, state = group.act_and_prepare(arch, params, g, g_inv, state, problem.inputs)
            lefts, rights = group.compose(g, lefts), group.compose(rights, right)
            for m, tm in enumerate(t):
                record.algebra[m].append(tm)
        taken += 1
    if first is None:
        with phases.span(phases.OBJECTIVE):
            first = objective.evaluate(problem, params, create_graph=False)
    loss = first.loss
    if loss is None:
        with torch.no_grad():
            loss = problem.loss(problem.start)
    record.known_lefts.update(enumerate(lefts))
    record.known_rights.update(enumerate(rights))
    return Outcome(params, record, taken, loss.detach(), first.value.detach())


def random_element(
    problem: Problem, group: Group, objective: Objective, settings: SearchOptions,
    scale: float | None, generator: torch.Generator | None,
) -> Outcome:
    """The control arm: one group element along an isotropic random Lie-algebra direction, with the
    size ``‖Σ_k T_k‖`` of the move an optimising search would make from here (a dry run, which is
    cheap for the exact groups), or with norm ``scale`` if given."""
    arch = problem.arch
    params = problem.start
    if scale is None:
        dry = search(problem, group, objective, settings)
        size: float | torch.Tensor = norm(dry.algebra)
        loss, before = dry.loss_before, dry.objective_before
    else:
        size = scale
        with phases.span(phases.OBJECTIVE):
            ev = objective.evaluate(problem, params, create_graph=False)
        before = ev.value.detach()
        loss = (ev.loss if ev.loss is not None else problem.loss(params)).detach()
    with phases.span(phases.APPLY), torch.no_grad():
        direction = group.sample(arch, params[0][0], generator)
        factor = size / norm(direction)
        algebra = [factor * d for d in direction]
        g, g_inv = group.element(algebra, settings.parametrization)
        moved, right = group.act(arch, params, g, g_inv, group.prepare(arch, params, problem.inputs))
    record = Steps(arch.widths, params[0][0], group.diagonal)
    for m in range(len(arch.widths)):
        record.known_lefts[m], record.known_rights[m] = g[m], right[m]
        record.algebra[m].append(algebra[m])
    return Outcome(moved, record, 1, loss, before)
