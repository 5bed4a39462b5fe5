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
from typing import ClassVar

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






