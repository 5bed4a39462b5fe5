"""The covariant search: exact groups with gradient-only objectives, from one gradient at w.

Since L(g·w) = L(w) for every input, ∇L(g·w) follows from ∇L(w) by matrix algebra
(:meth:`ExactGroup.transform_gradients`), so the K steps make no further pass over the batch.

For a diagonal group (rescale) and ‖∇L‖² it is shorter still. With the cumulative rescale s_m of
hidden layer m and q_m = s_m², the squared gradients move as ``G_m² ↦ G_m² ⊙ q_{m-1}ᵀ / q_m`` and
``g_{b,m}² ↦ g_{b,m}²/q_m``, so the step direction
``∂‖∇L‖²/∂θ_m = 2 (q_m ⊙ (S_{m+1}ᵀ q_{m+1}⁻¹) − (S_m q_{m-1} + β_m) ⊘ q_m)``
(S_m = the initial G_m², β_m = the initial g_{b,m}²) costs one matrix-vector product per middle
layer and a few vector operations per step, over all hidden layers at once. The group elements
stay vectors throughout: nothing of size width × width is formed (a 100,000-wide layer costs as
much memory as its weights).
"""

from __future__ import annotations

import torch
from torch import Tensor

from telebench.symmetry import phases
from telebench.symmetry.factors import Steps
from telebench.symmetry.groups import ExactGroup
from telebench.symmetry.objectives.base import Objective
from telebench.symmetry.objectives.grad_norm import GradNorm
from telebench.symmetry.problem import Problem
from telebench.symmetry.search_types import Outcome, SearchOptions, capped


def _step(grad: list[Tensor], settings: SearchOptions) -> list[Tensor]:
    scale: float | Tensor = settings.lr if settings.direction == "increase" else -settings.lr
    if settings.normalize_step:
        n = torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in grad]))
        scale = scale / n.clamp_min(torch.finfo(n.dtype).tiny)
    return [scale * d for d in grad]


def covariant(problem: Problem, group: ExactGroup, objective: Objective, settings: SearchOptions) -> Outcome:
    """Any exact group, any gradient-only objective: the gradients transformed step by step."""
    if group.diagonal and isinstance(objective, GradNorm) and type(objective).from_gradients is GradNorm.from_gradients:
        return rescale_grad_norm(problem, group, settings)
    arch = problem.arch
    params = arch.params()
    like = params[0][0]
    with phases.span(phases.OBJECTIVE):
        loss, grads = problem.gradients(params)
    lefts, rights = group.identity(arch, like), group.identity(arch, like)
    record = Steps(arch.widths, like, group.diagonal)
    before = None
    taken = 0
    for k in range(settings.steps):
        if k == 0 or settings.cap is not None:
            with phases.span(phases.OBJECTIVE):
                value = objective.from_gradients(grads)
            before = value if before is None else before
            if capped(value, settings):
                break
        with phases.span(phases.OBJECTIVE_GRAD):
            t = _step(group.algebra_gradient(grads, objective.gradient_wrt_gradients(grads)), settings)
        with phases.span(phases.GROUP_ACTION):
            g, g_inv = group.element(t, settings.parametrization)
            assert g_inv is not None
            grads = group.transform_gradients(grads, g, g_inv)
            lefts, rights = group.compose(g, lefts), group.compose(rights, g_inv)
            for m, tm in enumerate(t):
                record.algebra[m].append(tm)
        taken += 1
    if before is None:
        before = objective.from_gradients(grads)
    with phases.span(phases.APPLY):
        moved, _ = group.act(arch, params, lefts, rights)
    record.known_lefts.update(enumerate(lefts))
    record.known_rights.update(enumerate(rights))
    return Outcome(moved, record, taken, loss, before)


class _Squares:
    """The initial squared gradients laid out for the vectorised step: flat vectors over all hidden
    layers (``r`` holds S_m q_{m-1} + β_m, ``c`` holds S_{m+1}ᵀ q_{m+1}⁻¹), with the parts that never
    change (the input layer's row sums, the output layer's column sums) written once."""

    def __init__(self, grads: list[tuple[Tensor, Tensor | None]], widths: tuple[int, ...], like: Tensor) -> None:
        self.sq = [gw.square() for gw, _ in grads]
        self.offsets = [0]
        for n in widths:
            self.offsets.append(self.offsets[-1] + n)
        total = self.offsets[-1]
        self.beta = like.new_zeros(total)
        for m in range(len(widths)):
            gb = grads[m][1]
            if gb is not None:
                self.beta[self.slice(m)] = gb.square()
        self.r, self.c = like.new_empty(total), like.new_empty(total)
        torch.add(self.sq[0].sum(1), self.beta[self.slice(0)], out=self.r[self.slice(0)])
        torch.sum(self.sq[-1], 0, out=self.c[self.slice(len(widths) - 1)])
        out_bias = grads[-1][1]
        self.out_bias = 0.0 if out_bias is None else out_bias.square().sum()

    def slice(self, m: int) -> slice:
        return slice(self.offsets[m], self.offsets[m + 1])

    def update(self, q: Tensor, inv_q: Tensor) -> None:
        """r and c at the current q for the middle layers (one product each way per layer)."""
        for m in range(1, len(self.offsets) - 1):
            below, here = self.slice(m - 1), self.slice(m)
            torch.addmv(self.beta[here], self.sq[m], q[below], out=self.r[here])
            torch.mv(self.sq[m].mT, inv_q[here], out=self.c[below])

    def value(self, q: Tensor, inv_q: Tensor) -> Tensor:
        last = self.slice(len(self.offsets) - 2)
        return torch.dot(self.r, inv_q) + torch.dot(q[last], self.c[last]) + self.out_bias


def rescale_grad_norm(problem: Problem, group: ExactGroup, settings: SearchOptions) -> Outcome:
    """The covariant search for a diagonal group and ‖∇L‖², on flat vectors (see the module docstring)."""
    arch = problem.arch
    params = arch.params()
    like = params[0][0]
    with phases.span(phases.OBJECTIVE):
        loss, grads = problem.gradients(params)
    exp = settings.parametrization == "exp"
    with torch.no_grad():
        sq = _Squares(grads, arch.widths, like)
        theta = like.new_zeros(sq.offsets[-1])  # Σ_k T_k
        s, q = like.new_ones(sq.offsets[-1]), like.new_ones(sq.offsets[-1])  # s only for "linear"
        before = None
        taken = 0
        lr = settings.lr if settings.direction == "increase" else -settings.lr
        for k in range(settings.steps):
            with phases.span(phases.OBJECTIVE_GRAD):
                inv_q = q.reciprocal()
                sq.update(q, inv_q)
                if k == 0 or settings.cap is not None:
                    value = sq.value(q, inv_q)
                    before = value if before is None else before
                    if capped(value, settings):
                        break
                d = torch.addcmul(q * sq.c, sq.r, inv_q, value=-1)  # half the step direction
                if settings.normalize_step:
                    t = d * (lr / torch.linalg.vector_norm(d).clamp_min(torch.finfo(d.dtype).tiny))
                else:
                    t = d * (2 * lr)
            with phases.span(phases.GROUP_ACTION):
                theta += t
                if exp:
                    q = torch.exp(theta * 2)
                else:  # s = Π(1 + t_k), which may turn negative: the invariance check then rejects it
                    s = s * (1 + t)
                    q = s * s
            taken += 1
        if before is None:
            inv_q = q.reciprocal()
            sq.update(q, inv_q)
            before = sq.value(q, inv_q)
        with phases.span(phases.APPLY):
            left = theta.exp() if exp else s
            right = (-theta).exp() if exp else s.reciprocal()
            lefts = [left[sq.slice(m)] for m in range(len(arch.widths))]
            rights = [right[sq.slice(m)] for m in range(len(arch.widths))]
            moved, _ = group.act(arch, params, lefts, rights)
    record = Steps(arch.widths, like, diagonal=True)
    for m in range(len(arch.widths)):
        record.known_lefts[m], record.known_rights[m] = lefts[m], rights[m]
        record.algebra[m].append(theta[sq.slice(m)])
    return Outcome(moved, record, taken, loss, before)
