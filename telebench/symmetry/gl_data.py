"""The paper's data-dependent GL(n) action for invertible activations (exact on the teleport batch only when it is no larger than the layer width)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

from telebench.symmetry.acceptance import GL_DATA_MAX_WEIGHT_CHANGE
from telebench.symmetry.architecture import Architecture, Layer, Params, SymmetryError, describe
from telebench.symmetry.groups import PARAMETRIZATIONS, Element, Group, first_violation
from telebench.symmetry.linalg import LeastSquares, expm
from telebench.symmetry.problem import Forward, forward_pass


@dataclass(frozen=True)
class _Activations(Forward):
    """gl-data's state at the current weights: the hidden activations σ(Z_m) (the targets a move must
    reproduce), with Z_m, σ'(Z_m) and a QR factorisation of each σ(Z_m)."""

    solvers: list[LeastSquares]


class GLDataGroup(Group):
    """The paper's data-dependent GL(n) action for invertible activations, on the teleport batch H.

    W_m → g W_m, b_m → g b_m, and W_{m+1} → W_{m+1} A with A the least-squares solution of
    A σ(g Z_m) ≈ σ(Z_m) (Z_m = W_m H + b_m on the batch) closest to the identity:
    ``A = I + (σ(Z) − σ(gZ)) σ(gZ)⁺``. When σ(gZ) has full row rank (batch ≥ width, the reference
    code's regime) this is exactly the paper's ``σ(Z) σ(gZ)⁺``; when the batch is smaller than the
    width it is the exact solution nearest to I, so g = I leaves the weights unchanged instead of
    projecting W_{m+1} onto the batch's span. Hidden layers are processed in order, each fitting the
    *original* activations from the moved network's actual ones, so errors do not compound.
    Exact on the batch when batch ≤ width; a least-squares approximation otherwise, so every
    teleport's loss change is measured and checked.

    The sweep that moves the weights is a forward pass of the moved network, so the activations it
    computes are the next step's state: each step recomputes them from the new weights, once.
    """

    name = "gl-data"
    exact = False
    tolerance_float32 = 1e-2
    tolerance_float64 = 1e-2
    max_weight_change = GL_DATA_MAX_WEIGHT_CHANGE

    def check(self, arch: Architecture) -> None:
        bad = first_violation(arch, "invertible")
        if bad:
            raise SymmetryError(
                f"{describe(*bad)}: group 'gl-data' needs an invertible activation (LeakyReLU with a "
                "positive slope, Tanh, Sigmoid, ELU, Softplus or Identity) between Linear layers; use "
                "'rescale' for ReLU networks."
            )

    def element(self, algebra: Element, parametrization: str = "exp") -> tuple[Element, Element | None]:
        """g only: the right factor comes from least squares, so no inverse is computed."""
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}.")
        if parametrization == "exp":
            return [expm(t) for t in algebra], None
        return [torch.eye(t.shape[0], dtype=t.dtype, device=t.device) + t for t in algebra], None

    def prepare(self, arch: Architecture, params: Params, inputs: Tensor) -> _Activations:
        fwd = forward_pass(arch, params, inputs)
        return _Activations(fwd.z, fwd.h, fwd.slope, [LeastSquares(h) for h in fwd.h])

    def _sweep(
        self, arch: Architecture, params: Params, g: Element, state: _Activations, exact: bool
    ) -> tuple[Params, Element, _Activations | None]:
        """Layer by layer: pre-activation g·Z̃_m, activation, least-squares right factor.

        ``exact``: fit against the moved activations' own QR (the true action, differentiable in g
        when g requires grad), and return the moved network's activations as the next state.
        Otherwise reuse the current activations' QR,
        which agrees with the true action to first order at g = I (the residual σ(Z) − σ(gZ)
        multiplying the pseudo-inverse's derivative vanishes there).
        """
        rights: Element = []
        moved: Params = []
        zs, hs, slopes, solvers = [], [], [], []
        h: Tensor | None = None
        for m, (w, b) in enumerate(params[:-1]):
            if m > 0:
                w = w @ rights[-1]
            w, b = g[m] @ w, None if b is None else g[m] @ b
            # The moved network's pre-activations: layer 0's as g·Z₀ (a batch × n × n product instead of
            # a pass over the inputs, exact since that layer has no right factor), later ones directly.
            # h is the previous layer's moved activations, set by the time m > 0.
            z = state.z[0] @ g[0].mT if m == 0 else torch.nn.functional.linear(cast(Tensor, h), w, b)
            if exact:
                h, slope = arch.activate_with_slope(m, z)
                if z.requires_grad:  # a caller differentiating the action itself (e.g. along exp(tM))
                    h = arch.activate(m, z)
                solver = LeastSquares(h)
                zs.append(z)
                hs.append(h)
                slopes.append(slope)
                solvers.append(solver)
            else:
                h = arch.activate(m, z)
                solver = state.solvers[m]
            correction = solver.solve(state.h[m] - h)  # M − I, where h M ≈ the old activations
            if not correction.requires_grad:  # no graph to keep: add the identity in place
                correction.diagonal().add_(1)
                rights.append(correction.mT)
            else:
                rights.append((torch.eye(h.shape[1], dtype=h.dtype, device=h.device) + correction).mT)
            moved.append((w, b))
        w, b = params[-1]
        moved.append((w @ rights[-1], b))
        return moved, rights, _Activations(zs, hs, slopes, solvers) if exact else None

    def act(
        self, arch: Architecture, params: Params, g: Element, g_inv: Element | None, state: _Activations
    ) -> tuple[Params, Element]:
        moved, rights, _ = self._sweep(arch, params, g, state, exact=True)
        return moved, rights

    def act_and_prepare(
        self, arch: Architecture, params: Params, g: Element, g_inv: Element | None, state: _Activations,
        inputs: Tensor,
    ) -> tuple[Params, Element, _Activations]:
        moved, rights, after = self._sweep(arch, params, g, state, exact=True)
        assert after is not None
        return moved, rights, after

    def act_near_identity(self, arch: Architecture, params: Params, algebra: Element, state: _Activations) -> Params:
        one = self.identity(arch, algebra[0])
        moved, _, _ = self._sweep(arch, params, [i + t for i, t in zip(one, algebra, strict=True)], state, exact=False)
        return moved

    def pullback(self, arch: Architecture, params: Params, state: _Activations, dparams: Sequence[Layer]) -> Element:
        """Closed-form adjoint of the action's derivative at g = I (checked against autograd in tests).

        Tangent map, with P_m = σ(Z_m), D_m = σ'(Z_m): dH_m = D_m ⊙ (dZ̃_m + Z_m dT_mᵀ),
        dM_m = −P_m⁺ dH_m, dZ̃_{m+1} = (I − P_m P_m⁺) dH_m W_{m+1}ᵀ, dW_m' = dT_m W_m + W_m dM_{m-1}ᵀ,
        db_m' = dT_m b_m. Its transpose runs from the last hidden layer down.
        """
        out: list[Tensor] = []
        z_bar = None  # adjoint of dZ̃_{m+1}
        for m in reversed(range(arch.n_hidden)):
            (w, b), (v, vb) = params[m], dparams[m]
            w_next, v_next = params[m + 1][0], dparams[m + 1][0]
            h_bar = -state.solvers[m].solve_adjoint(v_next.mT @ w_next)
            if z_bar is not None:
                h_bar = h_bar + state.solvers[m].residual(z_bar @ w_next)
            u = state.slope[m] * h_bar
            t_bar = torch.addmm(u.mT @ state.z[m], v, w.mT)
            # vb is not None where b is not: dparams share params' bias pattern.
            out.append(t_bar if b is None else torch.addr(t_bar, cast(Tensor, vb), b))
            z_bar = u
        return out[::-1]


