"""Teleport objectives: scalar functions of the weights that a teleport raises or lowers.

An objective is evaluated on functional weights (``Params``) through a :class:`Problem`, never on
the model, so the search can differentiate it with respect to the group element. The search, not
the objective, handles ``direction``. Objectives that need fixed randomness for one teleport (the
directions of a sharpness estimate, say) draw it in :meth:`Objective.setup`, once per teleport, so
the objective stays the same function over the K steps.

Objectives that depend on the weights only through the loss gradient (``gradient_only``) get the
fast covariant search on exact groups: one gradient at w, then small matrix algebra.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from telebench.symmetry import phases
from telebench.symmetry.architecture import Layer, Params, flat, unflat
from telebench.symmetry.groups import Group
from telebench.symmetry.problem import Forward, Problem


@dataclass(frozen=True)
class Evaluation:
    """An objective's value at one point, plus the loss there when the objective computed it anyway."""

    value: Tensor
    loss: Tensor | None = None


class Objective(ABC):
    """Interface every teleport objective implements."""

    name: ClassVar[str]
    gradient_only: ClassVar[bool] = False  # value is a function of ∇L alone (enables the covariant search)

    def setup(self, problem: Problem, group: Group, generator: torch.Generator | None) -> None:  # noqa: B027
        """Draw whatever must stay fixed during one teleport. Called once before the search."""

    @abstractmethod
    def evaluate(self, problem: Problem, params: Params, *, create_graph: bool) -> Evaluation:
        """The objective at ``params``; differentiable w.r.t. whatever ``params`` depend on when
        ``create_graph`` is True."""

    def value_and_gradient(
        self, problem: Problem, params: Params, forward: Forward | None = None, *, value: bool = True
    ) -> tuple[Evaluation | None, list[Layer]]:
        """The objective (detached; None unless ``value``) and its gradient w.r.t. every weight and
        bias at ``params``.

        ``forward``: the hidden activations at ``params``, when the caller has them (an objective may
        use them to skip a forward pass). By default a backward pass through :meth:`evaluate` with
        ``create_graph=True``.
        """
        leaves = [t.detach().requires_grad_() for t in flat(params)]
        with torch.enable_grad():
            with phases.span(phases.OBJECTIVE):
                ev = self.evaluate(problem, unflat(leaves, params), create_graph=True)
            with phases.span(phases.OBJECTIVE_GRAD):
                grads = torch.autograd.grad(ev.value, leaves, allow_unused=True)
        dparams = [torch.zeros_like(t) if d is None else d for t, d in zip(leaves, grads, strict=True)]
        loss = None if ev.loss is None else ev.loss.detach()
        return Evaluation(ev.value.detach(), loss) if value else None, unflat(dparams, params)

    def from_gradients(self, grads: Sequence[Layer]) -> Tensor:
        """The value from the loss gradients alone (only for ``gradient_only`` objectives)."""
        raise NotImplementedError(f"objective {self.name!r} is not a function of the gradient alone.")

    def gradient_wrt_gradients(self, grads: Sequence[Layer]) -> list[Layer]:
        """∂value/∂G for every gradient tensor G (only for ``gradient_only`` objectives); autograd by default."""
        leaves = [t.detach().requires_grad_() for t in flat(grads)]
        with torch.enable_grad():
            dgrads = torch.autograd.grad(self.from_gradients(unflat(leaves, grads)), leaves)
        return unflat(dgrads, grads)


class GradNorm(Objective):
    """Σ‖∂L/∂W‖² + Σ‖∂L/∂b‖² over every Linear layer, on the teleport batch.

    Raising it is the paper's convergence objective: a larger gradient at the same loss means a
    longer first step for the optimizer.
    """

    name = "grad_norm"
    gradient_only = True

    def value_and_gradient(
        self, problem: Problem, params: Params, forward: Forward | None = None, *, value: bool = True
    ) -> tuple[Evaluation | None, list[Layer]]:
        """∇_w ‖∇L‖² = 2 H ∇L, an exact Hessian-vector product from the MLP's hand-written R-operator
        (see :meth:`Problem.gradient_and_hvp`), about two gradients' work instead of a double backward."""
        loss, grads, hvp = problem.gradient_and_hvp(params, forward)
        evaluation = None
        if value:
            with phases.span(phases.OBJECTIVE):
                evaluation = Evaluation(self.from_gradients(grads), loss)
        return evaluation, [(2 * w, None if b is None else 2 * b) for w, b in hvp]

    def evaluate(self, problem: Problem, params: Params, *, create_graph: bool) -> Evaluation:
        loss, grads = problem.gradients(params, create_graph=create_graph)
        return Evaluation(self.from_gradients(grads), loss)

    def from_gradients(self, grads: Sequence[Layer]) -> Tensor:
        return torch.cat([t.reshape(-1) for t in flat(grads)]).square().sum()

    def gradient_wrt_gradients(self, grads: Sequence[Layer]) -> list[Layer]:
        return [(2 * w, None if b is None else 2 * b) for w, b in grads]


OBJECTIVES: dict[str, type[Objective]] = {GradNorm.name: GradNorm}


def get_objective(objective: str | Objective, **kwargs: Any) -> Objective:
    """An objective instance from its registry name and options (an instance passes through)."""
    if isinstance(objective, Objective):
        if kwargs:
            raise ValueError("objective_kwargs cannot be combined with an Objective instance.")
        return objective
    try:
        cls = OBJECTIVES[objective]
    except KeyError:
        raise ValueError(f"unknown teleport objective {objective!r}; choose one of {sorted(OBJECTIVES)}.") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options {sorted(kwargs)} for objective {objective!r}: {exc}") from None


# Objectives in their own modules; imported here (they subclass Objective above) so the registry knows them.
from telebench.symmetry.curvature import Curvature  # noqa: E402
from telebench.symmetry.sharpness import Sharpness  # noqa: E402

OBJECTIVES.update({Sharpness.name: Sharpness, Curvature.name: Curvature})
