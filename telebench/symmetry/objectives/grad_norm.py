"""The convergence objective: the squared norm of the loss gradient at the teleported weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from telebench.symmetry import phases
from telebench.symmetry.architecture import Layer, Params, flat
from telebench.symmetry.objectives.base import Evaluation, Objective
from telebench.symmetry.problem import Forward, Problem


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


