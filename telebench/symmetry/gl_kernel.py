"""One gl-data search step for ‖∇L‖², fused: gradient, Hessian-vector product and pull-back in one pass.

The generic search computes ∇_w‖∇L‖² = 2H∇L as full weight-shaped tensors and then pulls them back
into the Lie algebra (:meth:`GLDataGroup.pullback`). Written out, the pull-back only ever needs
products of those tensors with the weights, and every gradient is a product of batch-shaped
factors, ``G_m = δ_mᵀ H_{m-1}``. So the step is computed from batch-shaped quantities alone
(``b × width``), the same numbers in a different order:

* the input layer's gradient is never formed: ``X G₀ᵀ = (X Xᵀ) δ₀`` and ``‖G₀‖² = Σ δ₀ ⊙ (X Xᵀ δ₀)``
  with ``K = X Xᵀ`` computed once per teleport when the batch is below the input width (otherwise
  ``δ₀ᵀX`` and ``X G₀ᵀ``, the floor DESIGN.md §3 names); the Hessian-vector product's input-layer
  block ``Ḋ₀ᵀ X`` is not computed at all, since the pull-back only needs ``Ḋ₀ᵀ X W₀ᵀ = Ḋ₀ᵀ (Z₀ − b₀)``;
* hidden layers wider than the batch use the same kernel trick with ``K = H Hᵀ``, which is also the
  Gram matrix of their least-squares solver (:class:`WideSolver`);
* the Lie-algebra step of layer m is ``(u_m + 2Ḋ_m)ᵀ Z_m + 2δ_mᵀ (Ḣ_{m-1} W_mᵀ)``: a dense
  ``n × n`` matrix for layers no wider than the batch, and otherwise kept as its two
  ``2b × n`` factors (rank ≤ 2b), which :mod:`telebench.symmetry.gl_search` exponentiates as
  ``I + Aᵀ φ(c B Aᵀ) c B`` without forming an ``n × n`` matrix.

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
from telebench.symmetry.losses import Hvp
from telebench.symmetry.problem import Problem

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
    blocked Householder QR is slow for thin matrices."""

    def __init__(self, p: Tensor) -> None:
        if p.dtype == torch.float64 or p.shape[1] < 16 or p.numel() <= 4000:
            self.q, self.r = torch.linalg.qr(p)
            return
        p64 = p.double()
        self.r = _nan_unless_factored(*torch.linalg.cholesky_ex(p64.mT @ p64)).mT.to(p.dtype)
        self.q = torch.linalg.solve_triangular(self.r, p, upper=True, left=False)

    def solve(self, e: Tensor) -> Tensor:
        """P⁺ E."""
        return torch.linalg.solve_triangular(self.r, self.q.mT @ e, upper=True)

    def adjoint(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        """(P⁺)ᵀ F, plus (I − P P⁺) X when given: Q (R⁻ᵀF − QᵀX) + X."""
        y = torch.linalg.solve_triangular(self.r.mT, f, upper=False)
        if x is None:
            return self.q @ y
        return torch.addmm(x, self.q, y - self.q.mT @ x)


class WideSolver:
    """Least squares against activations ``P`` (b × n) with b < n, through the b × b Gram matrix
    ``K = P Pᵀ``: formed, factored (Cholesky) and inverted in float64, so a float32 solve loses no
    more than a QR would (the error of ``P⁺E = Pᵀ(K⁻¹E)`` stays proportional to cond(P), not
    cond(P)²), then applied as one matrix product in the activations' dtype. Full row rank means
    P P⁺ = I, so the residual of the generic pull-back vanishes. A rank-deficient P gives non-finite
    numbers, which the teleport's checks reject."""

    def __init__(self, p: Tensor) -> None:
        p64 = p if p.dtype == torch.float64 else p.double()
        k64 = p64 @ p64.mT
        inverse = torch.cholesky_inverse(_nan_unless_factored(*torch.linalg.cholesky_ex(k64)))
        self.gram = k64 if p.dtype == torch.float64 else k64.to(p.dtype)  # for products, not solves
        self.inverse = inverse if p.dtype == torch.float64 else inverse.to(p.dtype)

    def kinv(self, y: Tensor) -> Tensor:
        """K⁻¹ Y."""
        return self.inverse @ y


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

    def add(self, arch: Architecture, m: int, z: Tensor) -> tuple[Tensor, Solver]:
        """Append hidden layer m's state from its pre-activations; returns σ(z) and its solver."""
        h, slope, curvature = arch.derivatives(m, z)
        solver = TallSolver(h) if h.shape[0] >= h.shape[1] else WideSolver(h)
        self.z.append(z)
        self.h.append(h)
        self.slope.append(slope)
        self.curvature.append(curvature)
        self.solvers.append(solver)
        return h, solver


class _Grad:
    """Layer m's weight gradient ``G = δᵀH`` (H: the layer's input on the batch) and the three
    products a step needs from it, either with G formed (dense) or through ``K = H Hᵀ``."""

    def __init__(self, delta: Tensor, h: Tensor, kernel: Tensor | None, bias: bool) -> None:
        self.delta, self.h, self.kernel = delta, h, kernel
        self.gb = delta.sum(0) if bias else None
        if kernel is None:
            self.g: Tensor = delta.mT @ h
        else:
            self.kd: Tensor = kernel @ delta

    def sqnorm(self) -> Tensor:
        v = (self.g * self.g).sum() if self.kernel is None else (self.delta * self.kd).sum()
        return v if self.gb is None else v + (self.gb * self.gb).sum()

    def h_gt(self) -> Tensor:
        """H Gᵀ plus the bias gradient (b × out)."""
        if self.kernel is not None:
            return self.kd if self.gb is None else self.kd + self.gb
        return self.h @ self.g.mT if self.gb is None else torch.addmm(self.gb, self.h, self.g.mT)

    def add_delta_g(self, x: Tensor) -> Tensor:
        """X + δ G (b × in)."""
        if self.kernel is None:
            return torch.addmm(x, self.delta, self.g)
        return torch.addmm(x, self.delta @ self.delta.mT, self.h)


@dataclass
class Backward:
    """The loss, ‖∇L‖² and what the tangent passes reuse, at one point."""

    loss: Tensor | None
    value: Tensor | None
    deltas: list[Tensor]
    pulled: list[Tensor]  # R_m = δ_m W_m for m ≥ 1 (index m − 1)
    grads: list[_Grad]
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
        x = problem.inputs
        b, d = x.shape
        widths = [lin.out_features for lin in self.arch.linears]
        n0 = widths[0]
        self.input_kernel = x @ x.mT if b * d + (steps + 1) * b * n0 < (2 * steps + 1) * d * n0 else None
        # Hidden layer m-1 wider than the batch: its Gram matrix is already there for layer m's gradient.
        self.kernel_layer = [
            m > 0 and b < widths[m - 1] and 2 * b * widths[m] + b * widths[m - 1] < 3 * widths[m] * widths[m - 1]
            for m in range(len(widths))
        ]
        rank = [b if m == 0 else 2 * b for m in range(len(widths) - 1)]
        self.lowrank = [b < n and 2 * k <= n for k, n in zip(rank, widths[:-1], strict=False)]
        self.bias = [lin.bias is not None for lin in self.arch.linears]

    def backward(self, params: LayerParams, state: State, second: bool, value: bool, loss: bool) -> Backward:
        """δ_m, R_m and the gradients (in factored form) at the point ``state`` describes, with the
        loss and ‖∇L‖² when asked for."""
        last = len(params) - 1
        w_out, b_out = params[-1]
        at = self.problem.head.derivatives(F.linear(state.h[-1], w_out, b_out), second=second,  # type: ignore[arg-type]
                                           loss=loss)
        delta = at.gradient
        deltas, pulled = [delta] * (last + 1), [delta] * last
        for m in range(last, 0, -1):
            back = delta @ params[m][0]  # type: ignore[operator]
            pulled[m - 1] = back
            delta = back * state.slope[m - 1]
            deltas[m - 1] = delta
        grads = []
        for m in range(last + 1):
            below = state.solvers[m - 1] if m > 0 else None
            kernel = self.input_kernel if m == 0 else (
                below.gram if isinstance(below, WideSolver) and self.kernel_layer[m] else None)
            grads.append(_Grad(deltas[m], self.problem.inputs if m == 0 else state.h[m - 1], kernel, self.bias[m]))
        total = torch.stack([g.sqnorm() for g in grads]).sum() if value else None
        return Backward(at.loss, total, deltas, pulled, grads, at.hvp)

    def _tangents(self, params: LayerParams, state: State, bw: Backward) -> tuple[
            list[Tensor], list[Tensor], list[Tensor], list[Tensor], dict[int, Tensor]]:
        """Tangent forward along ∇L (Ż, Ḣ and Q_m = Ḣ_{m-1} W_mᵀ) and tangent backward (Ḋ_m, Ṙ_m); for
        low-rank layers also ``[Z_m; Q_m]``, Q_m written straight into its lower half."""
        last = len(params) - 1
        z_dot: list[Tensor] = []
        h_dot: list[Tensor] = []
        q: list[Tensor] = []
        stacked: dict[int, Tensor] = {}
        for m in range(last + 1):
            zd = bw.grads[m].h_gt()
            if m == last:  # the output layer's Q is not needed on its own
                zd = torch.addmm(zd, h_dot[-1], params[m][0].mT)  # type: ignore[union-attr]
            elif m > 0:
                w = params[m][0]
                assert w is not None
                if self.lowrank[m]:  # B = [Z_m; Q_m], written in place (no concatenation later)
                    b = zd.shape[0]
                    stacked[m] = torch.empty((2 * b, w.shape[0]), dtype=zd.dtype, device=zd.device)
                    stacked[m][:b].copy_(state.z[m])
                    qm = torch.mm(h_dot[-1], w.mT, out=stacked[m][b:])
                else:
                    qm = h_dot[-1] @ w.mT
                q.append(qm)
                zd = zd + qm
            z_dot.append(zd)
            if m < last:
                h_dot.append(state.slope[m] * zd)
        assert bw.hvp is not None
        d_dot = [bw.hvp(z_dot[-1])] * (last + 1)
        r_dot = [d_dot[0]] * last
        for m in range(last, 0, -1):
            rd = d_dot[m] @ params[m][0]  # type: ignore[operator]
            r_dot[m - 1] = rd
            nxt = bw.grads[m].add_delta_g(rd).mul_(state.slope[m - 1])
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
                h_bar = torch.addmm(rd_next, solver.kinv(h @ h_dot[m].mT), r_next, beta=-2, alpha=-2)
            else:
                f = torch.addmm(h.mT @ rd_next, h_dot[m].mT, r_next, beta=-2, alpha=-2)
                h_bar = solver.adjoint(f, None if z_bar is None else z_bar @ params[m + 1][0])  # type: ignore[operator]
            u = state.slope[m] * h_bar
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
                dense = a.mT @ state.z[m]
                out[m] = AlgebraStep(dense=dense if m == 0 else torch.addmm(dense, bw.deltas[m].mT, q[m - 1], alpha=2))
            z_bar = u
        return out


def initial_state(arch: Architecture, params: Sequence[Sequence[Tensor | None]], inputs: Tensor) -> State:
    state = State([], [], [], [], [])
    x = inputs
    for m, (w, b) in enumerate(params[:-1]):
        x, _ = state.add(arch, m, F.linear(x, w, b))  # type: ignore[arg-type]
    return state
