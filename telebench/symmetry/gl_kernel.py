"""One gl-data search step for ‖∇L‖², fused: gradient, Hessian-vector product and pull-back in one pass.

The generic search computes ∇_w‖∇L‖² = 2H∇L as full weight-shaped tensors and then pulls them back
into the Lie algebra (:meth:`GLDataGroup.pullback`). Written out, the pull-back only ever needs
products of those tensors with the weights, and every gradient is a product of batch-shaped
factors, ``G_m = δ_mᵀ H_{m-1}``. So the step is computed from batch-shaped quantities alone
(``b × width``), the same numbers in a different order:

* the input layer's gradient is never formed: ``X G₀ᵀ = (X Xᵀ) δ₀`` and ``‖G₀‖² = Σ δ₀ ⊙ (X Xᵀ δ₀)``
  with ``K = X Xᵀ`` computed once per teleport when the batch is below the input width (otherwise
  ``δ₀ᵀX`` and ``X G₀ᵀ``, the floor DESIGN.md §3 names); the Hessian-vector product's input-layer
  block ``Ḋ₀ᵀ X`` is not computed at all, since the pull-back only needs ``Ḋ₀ᵀ X W₀ᵀ = Ḋ₀ᵀ (Z₀ − b₀)``,
  and the input weight ``W₀`` itself is never read inside the search;
* hidden layers wider than the batch use the same kernel trick with ``K = H Hᵀ``, which is also the
  Gram matrix of their least-squares solver (:class:`WideSolver`);
* the Lie-algebra step of layer m is ``(u_m + 2Ḋ_m)ᵀ Z_m + 2δ_mᵀ (Ḣ_{m-1} W_mᵀ)``: a dense
  ``n × n`` matrix for layers no wider than the batch, and otherwise kept as its two
  ``2b × n`` factors (rank ≤ 2b), which :mod:`telebench.symmetry.gl_search` exponentiates as
  ``I + Aᵀ φ(c B Aᵀ) c B`` without forming an ``n × n`` matrix.

On the paper's small nets a step is a few dozen operations on ``200 × 16`` tensors, so its cost is
the number of operations and the Python between them, not arithmetic: the passes below keep plain
lists, make no per-layer objects and form no transpose twice. On CPU the batch tensors of layers no
wider than the batch are stored column by column (:func:`~telebench.symmetry.linalg.column_major_layer`):
their products are written that way (MKL is several times slower writing a row-major result of few
columns) and LAPACK's QR takes them without transposing them. Elementwise operations inside the
kernel then do not mix layouts, since every batch tensor of a layer comes from one of those products
(the logits stay row by row for a loss through autograd, which may reshape them).

Notation as in :meth:`Problem.gradient_and_hvp`: δ_m = ∂L/∂Z_m, R_m = δ_m W_m, Ż/Ḣ the tangent forward
pass along the gradient, Ḋ_m its tangent backward, u_m the adjoint of the activations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from telebench.symmetry.architecture import Architecture
from telebench.symmetry.linalg import addmm, column_major, column_major_layer, linear, mm
from telebench.symmetry.losses import Head, Hvp
from telebench.symmetry.problem import Derivatives, Problem, activations

LayerParams = list[list[Tensor | None]]  # [[W, b], ...]: mutable, so the sweep can replace entries


def _nan_unless_factored(factor: Tensor, info: Tensor) -> Tensor:
    """A Cholesky factor, or NaN everywhere if the factorisation failed (a rank-deficient or
    non-finite Gram matrix): on the device, with no host sync, so the teleport's finite check
    rejects the move instead of a solver raising or returning finite garbage."""
    return factor.mul_(torch.where(info == 0, 1.0, math.nan).to(factor.dtype))  # factor is cholesky_ex's own


class TallSolver:
    """Least squares against activations ``P`` (b × n) with b ≥ n, from a thin QR ``P = Q R``.

    float64, or a small P: Householder QR (as :class:`~telebench.symmetry.linalg.LeastSquares`).
    Otherwise CholeskyQR with the Gram matrix in float64, ``R = chol(PᵀP)``, ``Q = P R⁻¹``: as
    accurate in float32 as Householder's (the float64 Gram keeps Q orthogonal to ~1e-7 up to
    cond(P) ≈ 1e4), and 1.5–2× faster from 32 columns or 2000 rows on one CPU thread, where LAPACK's
    blocked Householder QR is slow for thin matrices. Batch-shaped results keep P's layout (column
    by column when P is: :func:`~telebench.symmetry.linalg.column_major_layer`)."""

    __slots__ = ("q", "r", "q_t", "r_t", "colmajor")

    def __init__(self, p: Tensor) -> None:
        self.colmajor = column_major(p)
        if p.dtype == torch.float64 or p.shape[1] < 16 or p.numel() <= 4000:
            self.q, self.r = torch.linalg.qr(p)
        else:
            p64 = p.double()
            self.r = _nan_unless_factored(*torch.linalg.cholesky_ex(p64.mT @ p64)).mT.to(p.dtype)
            self.q = torch.linalg.solve_triangular(self.r, p, upper=True, left=False)
        self.q_t, self.r_t = self.q.mT, self.r.mT

    def solve(self, e: Tensor) -> Tensor:
        """P⁺ E."""
        return torch.linalg.solve_triangular(self.r, torch.mm(self.q_t, e), upper=True)

    def adjoint(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        """(P⁺)ᵀ F, plus (I − P P⁺) X when given: Q (R⁻ᵀF − QᵀX) + X, written into X (which the
        caller hands over: no copy of it)."""
        y = torch.linalg.solve_triangular(self.r_t, f, upper=False)
        if x is None:
            return mm(self.q, y, self.colmajor)
        return x.addmm_(self.q, y.addmm_(self.q_t, x, alpha=-1))


class WideSolver:
    """Least squares against activations ``P`` (b × n) with b < n, through the b × b Gram matrix
    ``K = P Pᵀ``: formed, factored (Cholesky) and inverted in float64, so a float32 solve loses no
    more than a QR would (the error of ``P⁺E = Pᵀ(K⁻¹E)`` stays proportional to cond(P), not
    cond(P)²), then applied as one matrix product in the activations' dtype. Full row rank means
    P P⁺ = I, so the residual of the generic pull-back vanishes. A rank-deficient P gives non-finite
    numbers, which the teleport's checks reject. (A float32 Gram matrix would halve its cost at
    widths of a few hundred, but moves a 784-256-256-10 search by ~1e-4 relative, twenty times
    the float32 rounding of the search itself.)"""

    __slots__ = ("gram", "inverse")

    def __init__(self, p: Tensor) -> None:
        p64 = p if p.dtype == torch.float64 else p.double()
        k64 = p64 @ p64.mT
        inverse = torch.cholesky_inverse(_nan_unless_factored(*torch.linalg.cholesky_ex(k64)))
        self.gram = k64 if p.dtype == torch.float64 else k64.to(p.dtype)  # for products, not solves
        self.inverse = inverse if p.dtype == torch.float64 else inverse.to(p.dtype)

    def kinv(self, y: Tensor) -> Tensor:
        """K⁻¹ Y."""
        return torch.mm(self.inverse, y)


Solver = TallSolver | WideSolver


@dataclass
class State:
    """The moved network on the teleport batch, per hidden layer: pre-activations, activations,
    σ', σ'' (None where zero) and the least-squares solver of the activations."""

    z: list[Tensor]
    h: list[Tensor]
    slope: list[Tensor]
    curvature: list[Tensor | None]
    solvers: list[Solver]

    def add(self, arch: Architecture, m: int, z: Tensor, act: Derivatives | None = None) -> tuple[Tensor, Solver]:
        """Append hidden layer m's state from its pre-activations; returns σ(z) and its solver.
        ``act``: the layer's σ, σ', σ'' in one call (:func:`activations`), else the architecture's."""
        h, slope, curvature = arch.derivatives(m, z) if act is None else act(z)
        solver = TallSolver(h) if h.shape[0] >= h.shape[1] else WideSolver(h)
        self.z.append(z)
        self.h.append(h)
        self.slope.append(slope)
        self.curvature.append(curvature)
        self.solvers.append(solver)
        return h, solver


@dataclass
class Backward:
    """The loss, ‖∇L‖² and what the tangent passes reuse, at one point. Per layer m: δ_m, the bias
    gradient (None where absent or carried by the input kernel), and the weight gradient either
    formed (``grads[m]``, out × in) or through a kernel (``kernel_deltas[m] = K δ_m``)."""

    loss: Tensor | None
    value: Tensor | None
    deltas: list[Tensor]
    pulled: list[Tensor]  # R_m = δ_{m+1} W_{m+1} for m < last (index m)
    bias_grads: list[Tensor | None]
    grads: list[Tensor | None]
    kernel_deltas: list[Tensor | None]
    hvp: Hvp | None


@dataclass
class AlgebraStep:
    """∂‖∇L‖²/∂T_m at T = 0 for one hidden layer: ``dense`` (n × n), or ``a``ᵀ``b`` kept factored."""

    dense: Tensor | None = None
    a: Tensor | None = None
    b: Tensor | None = None

    def sqnorm(self) -> Tensor:
        if self.dense is not None:
            return (self.dense * self.dense).sum()
        assert self.a is not None and self.b is not None
        return ((self.a @ self.a.mT) * (self.b @ self.b.mT)).sum()


class GradNormKernel:
    """The fused step for one teleport problem: which layers go through kernels and low-rank steps
    is chosen once, from the batch size, the widths and the number of steps."""

    def __init__(self, problem: Problem, steps: int) -> None:
        self.problem, self.arch = problem, problem.arch
        self.head = problem.head
        x = self.x = problem.inputs
        b, d = x.shape
        widths = [lin.out_features for lin in self.arch.linears]
        n0 = widths[0]
        self.last = len(widths) - 1
        self.bias = [lin.bias is not None for lin in self.arch.linears]
        # K = X Xᵀ, with 11ᵀ added when the input layer has a bias: K̃ = [X 1][X 1]ᵀ, so K̃δ₀ = X G₀ᵀ + g_b₀
        # and Σ δ₀ ⊙ K̃δ₀ = ‖G₀‖² + ‖g_b₀‖², and the input layer's bias gradient is never formed.
        self.input_kernel: Tensor | None = None
        if b * d + (steps + 1) * b * n0 < (2 * steps + 1) * d * n0:
            self.input_kernel = torch.mm(x, x.mT).add_(1) if self.bias[0] else torch.mm(x, x.mT)
        # Hidden layer m-1 wider than the batch: its Gram matrix is already there for layer m's gradient.
        self.kernel_layer = [
            m > 0 and b < widths[m - 1] and 2 * b * widths[m] + b * widths[m - 1] < 3 * widths[m] * widths[m - 1]
            for m in range(len(widths))
        ]
        rank = [b if m == 0 else 2 * b for m in range(len(widths) - 1)]
        self.lowrank = [b < n and 2 * k <= n for k, n in zip(rank, widths[:-1], strict=False)]
        # Per layer (its output), whether its b × width tensors are kept column by column; the logits
        # only for a closed-form head (a user's loss_fn, through autograd, may call .view on them).
        self.colmajor = [column_major_layer(b, n, x.device) for n in widths]
        self.colmajor[-1] = self.colmajor[-1] and type(self.head).derivatives is not Head.derivatives
        self.acts = activations(self.arch)

    def backward(self, params: LayerParams, state: State, second: bool, value: bool, loss: bool) -> Backward:
        """δ_m, R_m and the gradients (in factored form) at the point ``state`` describes, with the
        loss and ‖∇L‖² when asked for."""
        last, hs, slopes, cm = self.last, state.h, state.slope, self.colmajor
        w_out, b_out = params[last]
        at = self.head.derivatives(linear(hs[-1], w_out, b_out, cm[last]), second=second, loss=loss)  # type: ignore[arg-type]
        delta = at.gradient
        deltas, pulled = [delta] * (last + 1), [delta] * last
        for m in range(last, 0, -1):
            back = mm(delta, params[m][0], cm[m - 1])  # type: ignore[arg-type]
            pulled[m - 1] = back
            delta = back * slopes[m - 1]
            deltas[m - 1] = delta
        bias_grads: list[Tensor | None] = [None] * (last + 1)
        grads: list[Tensor | None] = [None] * (last + 1)
        kernel_deltas: list[Tensor | None] = [None] * (last + 1)
        for m in range(last + 1):
            d = deltas[m]
            kernel = self.input_kernel if m == 0 else (
                state.solvers[m - 1].gram if self.kernel_layer[m] else None)  # type: ignore[union-attr]
            if self.bias[m] and (m > 0 or kernel is None):  # K̃ carries the input layer's bias
                bias_grads[m] = d.sum(0)
            if kernel is None:
                grads[m] = torch.mm(d.mT, self.x if m == 0 else hs[m - 1])
            else:
                kernel_deltas[m] = mm(kernel, d, cm[m])
        total = self._value(deltas, bias_grads, grads, kernel_deltas) if value else None
        return Backward(at.loss, total, deltas, pulled, bias_grads, grads, kernel_deltas, at.hvp)

    @staticmethod
    def _value(deltas: list[Tensor], bias_grads: list[Tensor | None], grads: list[Tensor | None],
               kernel_deltas: list[Tensor | None]) -> Tensor:
        """‖∇L‖² = Σ_m ‖G_m‖² + ‖g_m‖², with ‖G_m‖² = Σ δ_m ⊙ (K δ_m) where G_m is not formed (sums of
        squares, not norms squared: ``_foreach_norm`` loses ~1e-5 over a float32 3072 × 128 gradient)."""
        parts = [(g * g).sum() if g is not None else (d * kd).sum()  # type: ignore[operator]
                 for d, g, kd in zip(deltas, grads, kernel_deltas, strict=True)]
        parts += [(gb * gb).sum() for gb in bias_grads if gb is not None]
        return torch.stack(parts).sum()

    def _tangents(self, params: LayerParams, state: State, bw: Backward) -> tuple[
            list[Tensor], list[Tensor], list[Tensor], list[Tensor], dict[int, Tensor]]:
        """Tangent forward along ∇L (Ż, Ḣ and Q_m = Ḣ_{m-1} W_mᵀ) and tangent backward (Ḋ_m, Ṙ_m); for
        low-rank layers also ``[Z_m; Q_m]``, Q_m written straight into its lower half."""
        last, hs, slopes, cm = self.last, state.h, state.slope, self.colmajor
        bias_grads, grads, kernel_deltas = bw.bias_grads, bw.grads, bw.kernel_deltas
        z_dot: list[Tensor] = []
        h_dot: list[Tensor] = []
        q: list[Tensor] = []
        stacked: dict[int, Tensor] = {}
        for m in range(last + 1):
            gb, kd = bias_grads[m], kernel_deltas[m]
            if kd is not None:  # H Gᵀ = K δ
                zd = kd if gb is None else kd + gb
            else:
                zd = linear(self.x if m == 0 else hs[m - 1], grads[m], gb, cm[m])  # type: ignore[arg-type]
            if m > 0:
                w = params[m][0]
                assert w is not None
                if m == last:  # the output layer's Q is not needed on its own
                    zd = addmm(zd, h_dot[-1], w.mT, cm[m])
                else:
                    if self.lowrank[m]:  # B = [Z_m; Q_m], written in place (no concatenation later)
                        b = zd.shape[0]
                        buffer = stacked[m] = torch.empty((2 * b, w.shape[0]), dtype=zd.dtype, device=zd.device)
                        buffer[:b].copy_(state.z[m])
                        qm = torch.mm(h_dot[-1], w.mT, out=buffer[b:])
                    else:
                        qm = linear(h_dot[-1], w, None, cm[m])
                    q.append(qm)
                    zd = zd + qm
            z_dot.append(zd)
            if m < last:
                h_dot.append(slopes[m] * zd)
        assert bw.hvp is not None
        d_dot = [bw.hvp(z_dot[-1])] * (last + 1)
        r_dot = [d_dot[0]] * last
        for m in range(last, 0, -1):
            rd = mm(d_dot[m], params[m][0], cm[m - 1])  # type: ignore[arg-type]
            r_dot[m - 1] = rd
            delta, g = bw.deltas[m], grads[m]
            if g is not None:  # (Ṙ + δ G) ⊙ σ'
                nxt = addmm(rd, delta, g, cm[m - 1])
            else:  # δ G = (δ δᵀ) H without G
                nxt = addmm(rd, F.linear(delta, delta), hs[m - 1], cm[m - 1])
            nxt.mul_(slopes[m - 1])
            curvature = state.curvature[m - 1]
            if curvature is not None:
                nxt = nxt + bw.pulled[m - 1] * curvature * z_dot[m - 1]
            d_dot[m - 1] = nxt
        return h_dot, q, d_dot, r_dot, stacked

    def algebra_gradient(self, params: LayerParams, state: State, bw: Backward) -> list[AlgebraStep]:
        """∂‖∇L‖²/∂T_m at T = 0 for every hidden layer (GLDataGroup.pullback of 2H∇L, in factored form)."""
        h_dot, q, d_dot, r_dot, stacked = self._tangents(params, state, bw)
        out: list[AlgebraStep] = [AlgebraStep()] * self.arch.n_hidden
        z_bar: Tensor | None = None
        for m in reversed(range(self.arch.n_hidden)):
            solver, h, r_next, rd_next = state.solvers[m], state.h[m], bw.pulled[m], r_dot[m]
            if isinstance(solver, WideSolver):  # (P⁺)ᵀ Hᵀ = P P⁺ = I and the residual vanishes
                # Ṙ_m (rd_next) is read for the last time here, so it takes the sum in place
                h_bar = rd_next.addmm_(solver.kinv(F.linear(h, h_dot[m])), r_next, beta=-2, alpha=-2)
            else:
                f = torch.mm(h.mT, rd_next).addmm_(h_dot[m].mT, r_next, beta=-2, alpha=-2)
                h_bar = solver.adjoint(f, None if z_bar is None else mm(z_bar, params[m + 1][0], self.colmajor[m]))  # type: ignore[arg-type]
            u = h_bar.mul_(state.slope[m])  # h_bar is a fresh tensor
            if self.lowrank[m] and m > 0:  # A = [u + 2Ḋ; 2δ], B = [Z; Q] (Q was written below Z)
                b = u.shape[0]
                a = torch.empty((2 * b, u.shape[1]), dtype=u.dtype, device=u.device)
                torch.add(u, d_dot[m], alpha=2, out=a[:b])
                torch.mul(bw.deltas[m], 2, out=a[b:])
                out[m] = AlgebraStep(a=a, b=stacked[m])
                z_bar = u
                continue
            a = torch.add(u, d_dot[m], alpha=2)
            if self.lowrank[m]:
                out[m] = AlgebraStep(a=a, b=state.z[m])
            else:
                dense = torch.mm(a.mT, state.z[m])
                out[m] = AlgebraStep(dense=dense if m == 0 else torch.addmm(dense, bw.deltas[m].mT, q[m - 1], alpha=2))
            z_bar = u
        return out


def initial_state(arch: Architecture, params: Sequence[Sequence[Tensor | None]], inputs: Tensor,
                  acts: Sequence[Derivatives | None] | None = None, colmajor: Sequence[bool] | None = None) -> State:
    """The network's state on ``inputs``; ``colmajor``: per layer, whether its batch tensors are
    stored column by column (:attr:`GradNormKernel.colmajor`; none are by default)."""
    state = State([], [], [], [], [])
    acts = activations(arch) if acts is None else acts
    x = inputs
    for m, (w, b) in enumerate(params[:-1]):
        x, _ = state.add(arch, m, linear(x, w, b, bool(colmajor and colmajor[m])), acts[m])  # type: ignore[arg-type]
    return state
