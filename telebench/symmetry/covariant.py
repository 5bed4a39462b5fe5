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
this transform of the measured one). For rescale and ‖∇L‖² the search also measures the loss at the
moved weights by a forward pass of the moved network (``Outcome.after.loss``, which the teleport's
invariance check compares with the loss before): every layer from its moved weights, except that the
input layer's pre-activations are the stored ``Z₀`` rescaled, as the gl-data search moves them, so
no product with the inputs is repeated. The whole rescale search is one gradient, ten steps of
vector algebra and that forward pass.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import Tensor

from telebench.symmetry import phases
from telebench.symmetry.architecture import Params
from telebench.symmetry.factors import Steps
from telebench.symmetry.groups import ExactGroup
from telebench.symmetry.objectives.base import Evaluation, Objective
from telebench.symmetry.objectives.grad_norm import GradNorm
from telebench.symmetry.problem import Problem, inference_safe, normal
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
    params = problem.start
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


BLOCK_MAX_UNITS = 64
"""Up to this many hidden units in all, :class:`_Squares` does a step's products (one per middle layer
each way) as one product with a block matrix: on CPU a small product costs its call, not its
arithmetic, and the block matrix costs (2·units)² numbers, nothing at this size."""


class _Squares:
    """The initial squared gradients laid out for the vectorised step: flat vectors over all hidden
    layers (``r`` holds S_m q_{m-1} + β_m, ``c`` holds S_{m+1}ᵀ q_{m+1}⁻¹), with the parts that never
    change (the input layer's row sums, the output layer's column sums) written once, and every
    per-step operation writing into views fixed here (no slicing, no allocation in the loop).

    ``[q | q⁻¹]`` and ``[c | r]`` are each one vector, so with at most :data:`BLOCK_MAX_UNITS` hidden
    units ``[c | r] = const + D [q | q⁻¹]`` is a single product, with D holding every S_mᵀ in c's rows
    and every S_m in r's; wider nets do one product each way per middle layer, and nothing width ×
    width is ever formed. In that order ‖∇L‖² is one dot product: ``[c_last | r] · [q_last | q⁻¹]``
    (plus the output bias's fixed part)."""

    def __init__(self, grads: list[tuple[Tensor, Tensor | None]], widths: tuple[int, ...], like: Tensor) -> None:
        offsets = [0]
        for n in widths:
            offsets.append(offsets[-1] + n)
        total = offsets[-1]
        parts = [slice(offsets[m], offsets[m + 1]) for m in range(len(widths))]
        buffers = like.new_zeros((3, 2 * total))  # [q | q⁻¹], [c | r], and the constant parts of [c | r]
        self.qq, self.cr, self.const = buffers[0], buffers[1], buffers[2]
        self.q, self.inv_q = self.qq[:total], self.qq[total:]
        self.c, self.r = self.cr[:total], self.cr[total:]
        self.q.fill_(1.0)
        const_c, beta = self.const[:total], self.const[total:]
        for m, part in enumerate(parts):
            gb = grads[m][1]
            if gb is not None:
                torch.square(gb, out=beta[part])
        beta[parts[0]].add_(grads[0][0].square().sum(1))  # r_0 = S_0 1 + β_0: the input layer's rows
        torch.sum(grads[-1][0].square(), 0, out=const_c[parts[-1]])  # c_last = 1ᵀ S_out: the output layer's columns
        squares = [(m, grads[m][0].square()) for m in range(1, len(widths))]  # S_m of the middle layers
        self.block: Tensor | None = None
        self.middle: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]] = []
        if squares and total <= BLOCK_MAX_UNITS:
            self.block = like.new_zeros((2 * total, 2 * total))
            for m, sm in squares:
                self.block[parts[m - 1], total + offsets[m]:total + offsets[m + 1]] = sm.mT  # c_{m-1} = S_mᵀ q_m⁻¹
                self.block[total + offsets[m]:total + offsets[m + 1], parts[m - 1]] = sm  # r_m = S_m q_{m-1} + β_m
        else:
            self.cr.copy_(self.const)  # the parts no product writes
            # (S_m, views) per middle layer m: r_m = S_m q_{m-1} + β_m, c_{m-1} = S_mᵀ q_m⁻¹
            self.middle = [(sm, beta[parts[m]], self.q[parts[m - 1]], self.r[parts[m]], self.inv_q[parts[m]],
                            self.c[parts[m - 1]]) for m, sm in squares]
        start = offsets[-2]  # [c_last | r] and [q_last | q⁻¹] are contiguous from here
        self.value_c, self.value_q = self.cr[start:], self.qq[start:]
        out_bias = grads[-1][1]
        self.out_bias = 0.0 if out_bias is None else torch.dot(out_bias, out_bias)
        self.parts = parts

    def update(self) -> None:
        """inv_q, r and c at the current q."""
        torch.reciprocal(self.q, out=self.inv_q)
        if self.block is not None:
            torch.addmv(self.const, self.block, self.qq, out=self.cr)
        for s, beta, q_below, r, inv_q, c_below in self.middle:
            torch.addmv(beta, s, q_below, out=r)
            torch.mv(s.mT, inv_q, out=c_below)

    def value(self) -> Tensor:
        """‖∇L‖² at the current q."""
        value = torch.dot(self.value_c, self.value_q)
        return value if isinstance(self.out_bias, float) else value.add_(self.out_bias)


def rescale_grad_norm(problem: Problem, group: ExactGroup, settings: SearchOptions) -> Outcome:
    """The covariant search for a diagonal group and ‖∇L‖², on flat vectors (see the module docstring).

    A step is ``q⁻¹``, the products giving r and c (one, with a block matrix, on small nets; else one
    each way per middle layer) and, for ``exp``, ``θ₂ ← θ₂ + 4·lr·(q ⊙ c − r ⊘ q)`` (two fused
    multiply-adds) and ``q = exp(θ₂)``, with ``θ₂ = 2 Σ_k T_k`` kept instead of ``Σ_k T_k`` (so
    ``q = s²`` needs no doubling): five vector operations on the paper's MNIST net. Like the
    gl-data search it runs under ``torch.inference_mode`` where nothing needs autograd, and hands
    back ordinary tensors."""
    arch = problem.arch
    params = problem.start
    like = params[0][0]
    mode: AbstractContextManager[object] = torch.inference_mode() if inference_safe(problem) else torch.no_grad()
    with mode:
        with phases.span(phases.OBJECTIVE):
            forward = problem.forward(params)
            loss, grads = problem.gradients(params, forward=forward)
        sq = _Squares(grads, arch.widths, like)
        before, after, taken, theta, s = _rescale_steps(sq, settings, like)
    with phases.span(phases.APPLY), torch.no_grad():  # ordinary tensors from here on
        theta = normal(theta)
        exp = settings.parametrization == "exp"
        left = theta.exp() if exp else normal(s)
        right = left.reciprocal()
        lefts, rights = [left[part] for part in sq.parts], [right[part] for part in sq.parts]
        moved, _ = group.act(arch, params, lefts, rights)
    with phases.span(phases.INVARIANCE_CHECK):
        loss_after = _moved_loss(problem, forward.z[0], lefts[0], moved)
    record = Steps(arch.widths, like, diagonal=True)
    for m, part in enumerate(sq.parts):
        record.known_lefts[m], record.known_rights[m] = lefts[m], rights[m]
        record.algebra[m].append(theta[part])
    return Outcome(moved, record, taken, normal(loss), normal(before), after=Evaluation(normal(after), loss_after))


def _moved_loss(problem: Problem, z0: Tensor, s0: Tensor, moved: Params) -> Tensor:
    """The loss on the batch at the moved weights, by a forward pass of the moved network: every
    layer from its moved weights, except that the input layer's pre-activations are the stored
    ``Z₀`` rescaled, ``Z₀ diag(s₀)`` (what ``X (diag(s₀) W₀)ᵀ + s₀ ⊙ b₀`` is, without the product
    with the inputs; the gl-data search moves ``Z₀`` the same way). The teleport's invariance check
    compares it with the loss before."""
    arch = problem.arch
    with torch.no_grad():
        x = z0 * s0
        for m in range(1, len(moved)):
            x = F.linear(arch.activate(m - 1, x), *moved[m])
        return problem.head.loss(x)


def _rescale_steps(sq: _Squares, settings: SearchOptions, like: Tensor,
                   ) -> tuple[Tensor, Tensor, int, Tensor, Tensor]:
    """The K steps on ``sq`` (its ``q`` moves): ‖∇L‖² before and after, the steps taken,
    θ = Σ_k T_k and s = Π_k (1 + T_k) (for ``linear``)."""
    q = sq.q
    exp = settings.parametrization == "exp"
    fused = exp and not settings.normalize_step  # θ₂ += 4·lr·(q ⊙ c − r ⊙ q⁻¹) straight from the products
    theta2 = torch.zeros_like(q)  # 2 Σ_k T_k
    s = q if exp else torch.ones_like(q)  # Π_k (1 + T_k) ("linear"; unused for exp)
    d = q if fused else torch.empty_like(q)  # (the fused step needs no d)
    before = None
    taken = 0
    lr = settings.lr if settings.direction == "increase" else -settings.lr
    check = settings.cap is not None
    tiny = torch.finfo(like.dtype).tiny
    twice = 2.0 if settings.normalize_step else 4 * lr
    for k in range(settings.steps):
        with phases.span(phases.OBJECTIVE_GRAD):
            sq.update()
            if k == 0 or check:
                value = sq.value()
                before = value if before is None else before
                if capped(value, settings):
                    break
            if not fused:
                torch.mul(q, sq.c, out=d).addcmul_(sq.r, sq.inv_q, value=-1)  # half the step direction
                if settings.normalize_step:  # T = lr·d/‖d‖
                    d.mul_(lr / torch.linalg.vector_norm(d).clamp_min(tiny))
                elif not exp:  # T = 2·lr·d (for exp folded into θ₂'s update)
                    d.mul_(2 * lr)
        with phases.span(phases.GROUP_ACTION):
            if fused:
                torch.exp(theta2.addcmul_(q, sq.c, value=twice).addcmul_(sq.r, sq.inv_q, value=-twice), out=q)
            elif exp:
                torch.exp(theta2.add_(d, alpha=twice), out=q)
            else:  # s = Π(1 + T_k), which may turn negative: the invariance check then rejects it
                theta2.add_(d, alpha=2.0)
                s.mul_(d.add_(1))
                torch.mul(s, s, out=q)
        taken += 1
    sq.update()
    after = sq.value()
    return (after if before is None else before), after, taken, theta2.mul_(0.5), s
