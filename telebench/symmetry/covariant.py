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

The objective at the result is the covariant one (exact up to rounding, since the gradient there is
this transform of the measured one); the teleport measures the loss there again from the moved
weights, which is the invariance check.
"""

from __future__ import annotations

import torch
from torch import Tensor

from telebench.symmetry import phases
from telebench.symmetry.factors import Steps
from telebench.symmetry.groups import ExactGroup
from telebench.symmetry.objectives.base import Evaluation, Objective
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
    after = objective.from_gradients(grads)
    if before is None:
        before = after
    with phases.span(phases.APPLY):
        moved, _ = group.act(arch, params, lefts, rights)
    record.known_lefts.update(enumerate(lefts))
    record.known_rights.update(enumerate(rights))
    return Outcome(moved, record, taken, loss, before, after=Evaluation(after))


class _Squares:
    """The initial squared gradients laid out for the vectorised step: flat vectors over all hidden
    layers (``r`` holds S_m q_{m-1} + β_m, ``c`` holds S_{m+1}ᵀ q_{m+1}⁻¹), with the parts that never
    change (the input layer's row sums, the output layer's column sums) written once, and every
    per-step operation writing into views fixed here (no slicing, no allocation in the loop)."""

    def __init__(self, grads: list[tuple[Tensor, Tensor | None]], widths: tuple[int, ...], like: Tensor) -> None:
        sq = [gw.square() for gw, _ in grads]
        offsets = [0]
        for n in widths:
            offsets.append(offsets[-1] + n)
        total = offsets[-1]
        parts = [slice(offsets[m], offsets[m + 1]) for m in range(len(widths))]
        self.q, self.inv_q = like.new_ones(total), like.new_ones(total)
        self.r, self.c, self.beta = like.new_empty(total), like.new_empty(total), like.new_zeros(total)
        for m, part in enumerate(parts):
            gb = grads[m][1]
            if gb is not None:
                torch.square(gb, out=self.beta[part])
        torch.add(sq[0].sum(1), self.beta[parts[0]], out=self.r[parts[0]])
        torch.sum(sq[-1], 0, out=self.c[parts[-1]])
        # (S_m, S_mᵀ, views) per middle layer m: r_m = S_m q_{m-1} + β_m, c_{m-1} = S_mᵀ q_m⁻¹
        self.middle = [(sq[m], sq[m].mT.contiguous(), self.beta[parts[m]], self.q[parts[m - 1]], self.r[parts[m]],
                        self.inv_q[parts[m]], self.c[parts[m - 1]]) for m in range(1, len(widths))]
        self.last_q, self.last_c = self.q[parts[-1]], self.c[parts[-1]]
        out_bias = grads[-1][1]
        self.out_bias = 0.0 if out_bias is None else out_bias.square().sum()
        self.parts = parts

    def update(self) -> None:
        """inv_q, r and c at the current q (one product each way per middle layer)."""
        torch.reciprocal(self.q, out=self.inv_q)
        for s, s_t, beta, q_below, r, inv_q, c_below in self.middle:
            torch.addmv(beta, s, q_below, out=r)
            torch.mv(s_t, inv_q, out=c_below)

    def value(self) -> Tensor:
        """‖∇L‖² at the current q."""
        return torch.dot(self.r, self.inv_q) + torch.dot(self.last_q, self.last_c) + self.out_bias


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
        theta = torch.zeros_like(sq.q)  # Σ_k T_k
        s = torch.ones_like(sq.q)  # Π_k (1 + T_k), for "linear"
        d, t = torch.empty_like(sq.q), torch.empty_like(sq.q)
        before = None
        taken = 0
        lr = settings.lr if settings.direction == "increase" else -settings.lr
        for k in range(settings.steps):
            with phases.span(phases.OBJECTIVE_GRAD):
                sq.update()
                if k == 0 or settings.cap is not None:
                    value = sq.value()
                    before = value if before is None else before
                    if capped(value, settings):
                        break
                torch.mul(sq.q, sq.c, out=d).addcmul_(sq.r, sq.inv_q, value=-1)  # half the step direction
                if settings.normalize_step:
                    torch.mul(d, lr / torch.linalg.vector_norm(d).clamp_min(torch.finfo(d.dtype).tiny), out=t)
                else:
                    torch.mul(d, 2 * lr, out=t)
            with phases.span(phases.GROUP_ACTION):
                theta += t
                if exp:
                    torch.exp(theta.mul(2), out=sq.q)
                else:  # s = Π(1 + t_k), which may turn negative: the invariance check then rejects it
                    s.mul_(t.add_(1))
                    torch.mul(s, s, out=sq.q)
            taken += 1
        sq.update()
        after = sq.value()
        before = after if before is None else before
        with phases.span(phases.APPLY):
            left = theta.exp() if exp else s
            right = (-theta).exp() if exp else s.reciprocal()
            lefts = [left[part] for part in sq.parts]
            rights = [right[part] for part in sq.parts]
            moved, _ = group.act(arch, params, lefts, rights)
    record = Steps(arch.widths, like, diagonal=True)
    for m, part in enumerate(sq.parts):
        record.known_lefts[m], record.known_rights[m] = lefts[m], rights[m]
        record.algebra[m].append(theta[part])
    return Outcome(moved, record, taken, loss, before, after=Evaluation(after))
