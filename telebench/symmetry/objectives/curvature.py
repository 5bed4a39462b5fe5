"""Curvature of the minimum: how sharply the level-set curve γ(t) = exp(tM)·w bends at t = 0.

κ = √(‖γ′‖²‖γ″‖² − (γ′·γ″)²) / ‖γ′‖³, computed as ‖γ″⊥‖ / ‖γ′‖² (γ″⊥: the part of γ″ orthogonal to
γ′), which is the same number without the cancellation of the difference of squares. M is a random
Lie-algebra element, Frobenius-normalised per hidden layer, and κ is averaged over ``n_draws`` of
them. The curve is moved by the group's own ``act``, so the curvature a teleport optimises is the
curvature that is measured, for every group (the reference code used a different action, one layer
pair and an unnormalised M for its teleport).

γ′(0) and γ″(0) depend only on the 2-jet of t ↦ exp(tM), so the curve is evaluated with
g(t) = I + tM + t²M²/2 and g⁻¹(t) = I − tM + t²M²/2, which agree with exp(±tM) to second order:
the derivatives at 0 are exact, and no matrix exponential has to be differentiated.

Each t-derivative is a Jacobian-vector product along the scalar t, never a Jacobian matrix (the
reference code's nested Jacobians took 6 GB at batch 200). By default it is computed with the
double-backward identity J = ∂/∂u (uᵀJ), uᵀJ being one backward pass, because

* the gl-data action takes a non-differentiable shortcut whenever its inputs do not require grad,
  which is how tensors look inside ``torch.func.jvp``, so forward mode silently drops its tangent;
* for the exact groups, nested ``torch.func.jvp`` gives the same numbers (``method="forward"``,
  cross-checked in the tests) but costs about ten times more on the paper's 784-16-10-10 net
  (≈ 20 ms against ≈ 2 ms per κ on one CPU thread): functorch's per-operation overhead dominates
  such small tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jvp

from telebench.symmetry.architecture import Architecture, Params, flat, parse
from telebench.symmetry.group_registry import get_group
from telebench.symmetry.groups import Element, ExactGroup, Group
from telebench.symmetry.linalg import LeastSquares
from telebench.symmetry.objectives.base import Evaluation, Objective
from telebench.symmetry.problem import Forward, Problem


def random_direction(group: Group, arch: Architecture, like: Tensor, generator: torch.Generator | None) -> Element:
    """A random Lie-algebra element with unit Frobenius norm in every hidden layer."""
    return [m / torch.linalg.vector_norm(m) for m in group.sample(arch, like, generator)]


def _jet(group: Group, direction: Element, t: Tensor) -> tuple[Element, Element]:
    """g(t) = I + tM + t²M²/2 and g⁻¹(t) = I − tM + t²M²/2: exp(±tM) up to second order."""
    if group.diagonal:
        return ([1 + t * m + (t * t / 2) * m * m for m in direction],
                [1 - t * m + (t * t / 2) * m * m for m in direction])
    eyes = [torch.eye(m.shape[0], dtype=m.dtype, device=m.device) for m in direction]
    squares = [m @ m for m in direction]
    return ([i + t * m + (t * t / 2) * s for i, m, s in zip(eyes, direction, squares, strict=True)],
            [i - t * m + (t * t / 2) * s for i, m, s in zip(eyes, direction, squares, strict=True)])


def _curve(group: Group, arch: Architecture, params: Params, state: object, direction: Element) -> Callable[[Tensor], Tensor]:
    """t ↦ the flattened weights g(t)·w under the group's own action."""

    def gamma(t: Tensor) -> Tensor:
        g, g_inv = _jet(group, direction, t)
        moved, _ = group.act(arch, params, g, g_inv, state)
        return torch.cat([p.reshape(-1) for p in flat(moved)])

    return gamma


def _forward_mode(curve: Callable[[Tensor], Tensor], t0: Tensor) -> tuple[Tensor, Tensor]:
    """(γ′(0), γ″(0)) by jvp of jvp."""
    one = torch.ones_like(t0)

    def velocity(t: Tensor) -> Tensor:
        return jvp(curve, (t,), (one,))[1]

    # Without has_aux, jvp returns exactly (output, tangent); its stub also admits the has_aux triple.
    return cast(tuple[Tensor, Tensor], jvp(velocity, (t0,), (one,)))


def _derivative(y: Tensor, t: Tensor, create_graph: bool) -> Tensor:
    """dy/dt for a scalar ``t``, as the gradient w.r.t. u of the vector-Jacobian product uᵀ(dy/dt)."""
    u = torch.zeros_like(y, requires_grad=True)
    (vjp,) = torch.autograd.grad(y, t, u, create_graph=True, allow_unused=True)
    if vjp is None:
        return torch.zeros_like(y)
    (dy,) = torch.autograd.grad(vjp, u, create_graph=create_graph, allow_unused=True)
    return torch.zeros_like(y) if dy is None else dy


def _reverse_mode(curve: Callable[[Tensor], Tensor], t0: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
    """(γ′(0), γ″(0)) by the double-backward identity, twice."""
    t = t0.detach().requires_grad_()
    with torch.enable_grad():
        velocity = _derivative(curve(t), t, create_graph=True)
        acceleration = _derivative(velocity, t, create_graph=create_graph)
    return (velocity, acceleration) if create_graph else (velocity.detach(), acceleration)


METHODS = ("double-backward", "forward")


def curve_derivatives(
    group: Group,
    arch: Architecture,
    params: Params,
    state: object,
    direction: Element,
    create_graph: bool = False,
    method: str = "double-backward",
) -> tuple[Tensor, Tensor]:
    """γ′(0) and γ″(0) of γ(t) = exp(tM)·w, flattened like :func:`telebench.symmetry.architecture.flat`.

    ``state`` is ``group.prepare`` at ``params`` (for gl-data, made differentiable by
    :func:`prepare_state` when the result must be differentiated w.r.t. ``params``). ``method="forward"``
    (nested ``torch.func.jvp``) is valid for the exact groups only; see the module docstring.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    curve = _curve(group, arch, params, state, direction)
    t0 = torch.zeros((), dtype=params[0][0].dtype, device=params[0][0].device)
    if method == "forward":
        if not isinstance(group, ExactGroup):
            raise ValueError(f"forward mode drops the tangent of group {group.name!r}; use method='double-backward'.")
        return _forward_mode(curve, t0)
    return _reverse_mode(curve, t0, create_graph)


def kappa(velocity: Tensor, acceleration: Tensor) -> Tensor:
    """Curvature of a curve from its first two derivatives: ‖γ″ − (γ′·γ″/‖γ′‖²)γ′‖ / ‖γ′‖²."""
    speed2 = velocity.square().sum().clamp_min(torch.finfo(velocity.dtype).tiny)
    normal = acceleration - (velocity @ acceleration / speed2) * velocity
    return torch.linalg.vector_norm(normal) / speed2


def prepare_state(group: Group, arch: Architecture, params: Params, inputs: Tensor, differentiable: bool) -> object:
    """``group.prepare`` at ``params``; with ``differentiable``, its activations keep their graph to
    ``params`` (``prepare`` detaches them), so that κ of a data-dependent action can be differentiated
    w.r.t. the weights. Rebuilds the documented fields (z, h, and gl-data's least-squares solvers)."""
    state = group.prepare(arch, params, inputs)
    if state is None or not differentiable:
        return state
    if not (isinstance(state, Forward) and dataclasses.is_dataclass(state)):
        raise NotImplementedError(
            f"group {group.name!r} prepares a state the curvature objective cannot rebuild with gradients."
        )
    zs, hs = [], []
    x = inputs
    for m, (w, b) in enumerate(params[:-1]):
        z = F.linear(x, w, b)
        x = arch.activate(m, z)
        zs.append(z)
        hs.append(x)
    # Fields of state's own dataclass (a Forward or a subclass of it): their types differ per key.
    changes: dict[str, Any] = {"z": zs, "h": hs}
    if any(f.name == "solvers" for f in dataclasses.fields(state)):
        changes["solvers"] = [LeastSquares(h) for h in hs]
    return dataclasses.replace(state, **changes)


def mean_curvature(
    group: Group, arch: Architecture, params: Params, inputs: Tensor, directions: list[Element], create_graph: bool
) -> Tensor:
    """κ averaged over ``directions`` at ``params`` (differentiable w.r.t. ``params`` with ``create_graph``)."""
    with torch.enable_grad() if create_graph else torch.no_grad():
        state = prepare_state(group, arch, params, inputs, differentiable=create_graph)
    values = []
    for direction in directions:
        with torch.enable_grad() if create_graph else torch.no_grad():
            velocity, acceleration = curve_derivatives(group, arch, params, state, direction, create_graph)
            values.append(kappa(velocity, acceleration))
    value = torch.stack(values).mean()
    return value if create_graph else value.detach()


class Curvature(Objective):
    """κ of γ(t) = exp(tM)·w averaged over ``n_draws`` fixed random directions M, drawn once per
    teleport, under the teleport's own group (and, for gl-data, on the teleport batch).

    ``seed`` seeds the directions when the teleport passes no generator.
    """

    name = "curvature"

    def __init__(self, n_draws: int = 4, seed: int = 0) -> None:
        if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
            raise ValueError(f"curvature n_draws must be a positive integer, got {n_draws!r}.")
        self.n_draws, self.seed = n_draws, int(seed)
        self._group: Group | None = None
        self._directions: list[Element] = []

    def setup(self, problem: Problem, group: Group, generator: torch.Generator | None) -> None:
        """Fix this teleport's group and draw its directions (from ``generator``, else from ``seed``)."""
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        like = problem.arch.params()[0][0]
        self._group = group
        self._directions = [random_direction(group, problem.arch, like, gen) for _ in range(self.n_draws)]

    def evaluate(self, problem: Problem, params: Params, *, create_graph: bool) -> Evaluation:
        if self._group is None:
            raise RuntimeError("Curvature.setup(problem, group, generator) must run before evaluate: κ needs the group.")
        value = mean_curvature(self._group, problem.arch, params, problem.inputs, self._directions, create_graph)
        return Evaluation(value)


def curvature(
    model: nn.Module,
    x: Tensor | None = None,
    y: Tensor | None = None,
    group: str | Group = "rescale",
    n_draws: int = 32,
    seed: int = 0,
    params: Params | None = None,
) -> float:
    """Mean curvature κ of the level-set curves exp(tM)·w through an MLP's weights, over ``n_draws``
    seeded random directions M of ``group``'s Lie algebra.

    ``x`` is needed only by data-dependent groups (gl-data acts on that batch); ``y`` is accepted for
    a signature uniform with :func:`telebench.symmetry.objectives.sharpness.sharpness` and unused, since κ does
    not involve the loss. Raises SymmetryError if the group cannot act on the model.
    """
    del y
    grp = get_group(group)
    arch = parse(model)
    grp.check(arch)
    weights = arch.params() if params is None else [(w.detach(), None if b is None else b.detach()) for w, b in params]
    if x is None and not isinstance(grp, ExactGroup):
        raise ValueError(f"group {grp.name!r} acts on a batch of data: pass inputs x to measure its curvature.")
    inputs = arch.prepare_inputs(x) if x is not None else weights[0][0].new_zeros((1, arch.linears[0].in_features))
    gen = torch.Generator().manual_seed(seed)
    directions = [random_direction(grp, arch, weights[0][0], gen) for _ in range(n_draws)]
    return float(mean_curvature(grp, arch, weights, inputs, directions, create_graph=False))
