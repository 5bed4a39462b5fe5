"""The teleport search: K steps of gradient ascent or descent on the Lie algebra, each from the identity.

Each step computes ∂f/∂T at T = 0 for the objective f at ``g(T)·w``, steps ``T = ±lr·∂f/∂T`` and
applies ``g(T)``, as in the paper. Two paths compute exactly that:

* **covariant** (exact groups with gradient-only objectives, e.g. rescale or linear with
  ``grad_norm``): one gradient at w. Since L(g·w) = L(w) for every input, ∇L(g·w) follows from
  ∇L(w) by matrix algebra, so the K steps make no further pass over the batch;
* **generic** (any group and objective): per step, the objective's gradient w.r.t. the weights
  (for ``grad_norm`` a Hessian-vector product), pulled back into the algebra through the
  derivative of the group action at the identity.

Nothing here reads a tensor on the host inside the K steps unless a ``cap`` asks for it (on CPU
the ``exp`` parametrisation reads one norm per step, which costs nothing there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from telebench.symmetry import phases
from telebench.symmetry.architecture import Params
from telebench.symmetry.groups import Element, ExactGroup, Group
from telebench.symmetry.objectives.base import Objective
from telebench.symmetry.problem import Forward, Problem


@dataclass(frozen=True)
class SearchOptions:
    """How to search: the knobs of :func:`telebench.symmetry.teleport` that shape the K steps."""

    steps: int = 10
    lr: float = 1e-2
    direction: str = "increase"  # increase | decrease
    normalize_step: bool = False  # each step has norm exactly lr (joint over hidden layers)
    cap: float | None = None  # stop once the objective reaches this value
    parametrization: str = "exp"  # exp | linear


@dataclass
class Outcome:
    """A search's result in functional form, before anything touches the model."""

    params: Params  # the moved weights
    lefts: Element  # per hidden layer, the composed left factor g_K ⋯ g_1
    rights: Element  # per hidden layer, the composed right factor r_1 ⋯ r_K
    algebra: Element  # Σ_k T_k: the size and direction of the move in the Lie algebra
    steps_taken: int
    loss_before: Tensor
    objective_before: Tensor


def norm(element: Element) -> Tensor:
    """Joint Frobenius norm over the hidden layers."""
    return torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in element]))


def _step(grad: Element, settings: SearchOptions) -> Element:
    """±lr·∇, or ±lr·∇/‖∇‖ with ``normalize_step``."""
    scale: float | Tensor = settings.lr if settings.direction == "increase" else -settings.lr
    if settings.normalize_step:
        n = norm(grad)
        scale = scale / n.clamp_min(torch.finfo(n.dtype).tiny)
    return [scale * d for d in grad]


def _capped(value: Tensor, settings: SearchOptions) -> bool:
    """Whether the objective already reached the cap: the only host read in the loop."""
    if settings.cap is None:
        return False
    v = float(value)
    return v >= settings.cap if settings.direction == "increase" else v <= settings.cap


def search(problem: Problem, group: Group, objective: Objective, settings: SearchOptions) -> Outcome:
    """Run the K-step search from the model's current weights (which it does not modify)."""
    _ = problem.head  # choose the loss head now: it may read the targets once, before the loop
    if isinstance(group, ExactGroup) and objective.gradient_only:
        return _covariant(problem, group, objective, settings)
    return _generic(problem, group, objective, settings)


def _covariant(problem: Problem, group: ExactGroup, objective: Objective, settings: SearchOptions) -> Outcome:
    arch = problem.arch
    params = arch.params()
    like = params[0][0]
    with phases.span(phases.OBJECTIVE):
        loss, grads = problem.gradients(params)
    lefts, rights, total = group.identity(arch, like), group.identity(arch, like), group.zeros(arch, like)
    before = None
    taken = 0
    for k in range(settings.steps):
        if k == 0 or settings.cap is not None:
            with phases.span(phases.OBJECTIVE):
                value = objective.from_gradients(grads)
            before = value if before is None else before
            if _capped(value, settings):
                break
        with phases.span(phases.OBJECTIVE_GRAD):
            t = _step(group.algebra_gradient(grads, objective.gradient_wrt_gradients(grads)), settings)
        with phases.span(phases.GROUP_ACTION):
            g, g_inv = group.element(t, settings.parametrization)
            assert g_inv is not None
            grads = group.transform_gradients(grads, g, g_inv)
            lefts, rights = group.compose(g, lefts), group.compose(rights, g_inv)
            total = [a + b for a, b in zip(total, t, strict=True)]
        taken += 1
    if before is None:
        before = objective.from_gradients(grads)
    with phases.span(phases.APPLY):
        moved, _ = group.act(arch, params, lefts, rights)
    return Outcome(moved, lefts, rights, total, taken, loss, before)


def _generic(problem: Problem, group: Group, objective: Objective, settings: SearchOptions) -> Outcome:
    arch = problem.arch
    params = arch.params()
    like = params[0][0]
    lefts, rights, total = group.identity(arch, like), group.identity(arch, like), group.zeros(arch, like)
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
        if ev is not None and _capped(ev.value, settings):
            break
        with phases.span(phases.OBJECTIVE_GRAD):
            t = _step(group.pullback(arch, params, state, dparams), settings)
        with phases.span(phases.APPLY), torch.no_grad():
            g, g_inv = group.element(t, settings.parametrization)
            params, right, state = group.act_and_prepare(arch, params, g, g_inv, state, problem.inputs)
            lefts, rights = group.compose(g, lefts), group.compose(rights, right)
            total = [a + b for a, b in zip(total, t, strict=True)]
        taken += 1
    if first is None:
        with phases.span(phases.OBJECTIVE):
            first = objective.evaluate(problem, params, create_graph=False)
    loss = first.loss
    if loss is None:
        with torch.no_grad():
            loss = problem.loss(arch.params())
    return Outcome(params, lefts, rights, total, taken, loss.detach(), first.value.detach())


def random_element(
    problem: Problem, group: Group, objective: Objective, settings: SearchOptions,
    scale: float | None, generator: torch.Generator | None,
) -> Outcome:
    """The control arm: one group element along an isotropic random Lie-algebra direction, with the
    size ``‖Σ_k T_k‖`` of the move an optimising search would make from here (a dry run, which is
    cheap for the exact groups), or with norm ``scale`` if given."""
    arch = problem.arch
    params = arch.params()
    if scale is None:
        dry = search(problem, group, objective, settings)
        size: float | Tensor = norm(dry.algebra)
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
    return Outcome(moved, g, right, algebra, 1, loss, before)
