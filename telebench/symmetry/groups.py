"""Symmetry groups acting on an MLP's hidden layers, each behind one small interface.

A group element is a list with one entry per hidden layer m (the output units of Linear layer m):
a vector ``s`` for diagonal groups (rescale), an ``n_m × n_m`` matrix otherwise. Lie-algebra
elements ``T`` have the same layout. With hidden-layer elements ``g_m`` and *right factors* ``r_m``,
every group here moves the weights as

    W_m' = g_m @ W_m @ r_{m-1},     b_m' = g_m @ b_m       (g_{L-1} = I, r_{-1} = I),

where ``r_m = g_m⁻¹`` for the exact groups (rescale, linear) and the least-squares matrix ``A_m`` for
gl-data. Conventions follow torch: ``W_m`` is ``out × in`` and activations are ``batch × width`` rows,
so "g acts on a unit vector h" reads ``h ↦ g h`` and a batch ``H ↦ H gᵀ``.

To add a group: subclass :class:`Group` (or :class:`ExactGroup` when the action is linear in the
weights and exact for every input), implement ``check`` and the action, and register it in ``GROUPS``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from telebench.symmetry.architecture import Architecture, Layer, Params, SymmetryError, describe, flat
from telebench.symmetry.linalg import expm

Element = list[Tensor]
"""One tensor per hidden layer: a group element, a Lie-algebra element or a right factor."""

PARAMETRIZATIONS = ("exp", "linear")


class Group(ABC):
    """A family of weight moves on an MLP's hidden layers, parametrised by a Lie-algebra element."""

    name: ClassVar[str]
    exact: ClassVar[bool]  # preserves the output for every input and acts linearly on the weights
    diagonal: ClassVar[bool] = False  # elements are stored as vectors (diagonal matrices)
    tolerance_float32: ClassVar[float]
    tolerance_float64: ClassVar[float]

    max_weight_change: ClassVar[float] = math.inf  # default bound on ‖w' − w‖/‖w‖ (acceptance.py)

    def default_tolerance(self, dtype: torch.dtype) -> float:
        """Largest relative loss change on the teleport batch accepted by default: a few hundred times
        the rounding a teleport accumulates in this dtype (exact groups), or the least-squares error
        expected on a typical teleport (gl-data)."""
        return self.tolerance_float64 if dtype == torch.float64 else self.tolerance_float32

    def default_max_weight_change(self, dtype: torch.dtype) -> float:
        """Largest relative weight change ‖w' − w‖/‖w‖ accepted by default: none (``inf``) for groups
        that preserve the function on every input; see :mod:`telebench.symmetry.acceptance`."""
        return self.max_weight_change

    @abstractmethod
    def check(self, arch: Architecture) -> None:
        """Raise SymmetryError naming the first layer this group cannot act on, and why."""

    # ---- Lie algebra ------------------------------------------------------------------------------
    def algebra_shape(self, width: int) -> tuple[int, ...]:
        return (width,) if self.diagonal else (width, width)

    def zeros(self, arch: Architecture, like: Tensor) -> Element:
        return [like.new_zeros(self.algebra_shape(n)) for n in arch.widths]

    def identity(self, arch: Architecture, like: Tensor) -> Element:
        if self.diagonal:
            return [like.new_ones(n) for n in arch.widths]
        return [torch.eye(n, dtype=like.dtype, device=like.device) for n in arch.widths]

    def sample(self, arch: Architecture, like: Tensor, generator: torch.Generator | None = None) -> Element:
        """A random Lie-algebra element with independent standard-normal coordinates."""
        device = generator.device if generator is not None else like.device
        return [
            torch.randn(self.algebra_shape(n), generator=generator, dtype=like.dtype, device=device).to(like.device)
            for n in arch.widths
        ]

    def element(self, algebra: Element, parametrization: str = "exp") -> tuple[Element, Element | None]:
        """The group element g for a Lie-algebra element T, and its exact inverse (None for groups
        that never use it).

        ``exp``: g = exp(T), g⁻¹ = exp(−T). ``linear``: g = I + T, g⁻¹ computed by a solve (not the
        first-order I − T of the reference code). A singular I + T gives non-finite weights, which
        the teleport's invariance check then rejects.
        """
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}.")
        if self.diagonal:
            if parametrization == "exp":
                return [t.exp() for t in algebra], [(-t).exp() for t in algebra]
            g = [1 + t for t in algebra]
            return g, [1 / s for s in g]
        if parametrization == "exp":  # one call per layer: padding to a common size costs more
            both = [expm(torch.stack([t, -t])) for t in algebra]
            return [e[0] for e in both], [e[1] for e in both]
        g = [torch.eye(t.shape[0], dtype=t.dtype, device=t.device) + t for t in algebra]
        return g, [torch.linalg.inv_ex(m)[0] for m in g]  # inv_ex: no error check, no host sync

    def compose(self, a: Element, b: Element) -> Element:
        """The element a∘b (first b, then a), layer by layer."""
        if self.diagonal:
            return [x * y for x, y in zip(a, b, strict=True)]
        return [x @ y for x, y in zip(a, b, strict=True)]

    def as_matrices(self, element: Element) -> list[Tensor]:
        return [torch.diag(e) for e in element] if self.diagonal else list(element)

    # ---- action -------------------------------------------------------------------------------------
    def _left(self, g: Tensor, t: Tensor) -> Tensor:
        """g acting on the rows of a weight (g @ W) or on a bias vector (g @ b)."""
        if self.diagonal:
            return g[:, None] * t if t.dim() == 2 else g * t
        return g @ t

    def _right(self, w: Tensor, r: Tensor) -> Tensor:
        return w * r if self.diagonal else w @ r

    def prepare(self, arch: Architecture, params: Params, inputs: Tensor) -> Any:
        """Data the action needs at the current weights (the activations, for gl-data); None if none."""
        return None

    @abstractmethod
    def act(
        self, arch: Architecture, params: Params, g: Element, g_inv: Element | None, state: Any
    ) -> tuple[Params, Element]:
        """The weights moved by g (exactly, as this group defines its action) and the right factors
        ``r_m`` used, so ``W_m' = g_m W_m r_{m-1}``. ``state`` comes from :meth:`prepare` at ``params``."""

    def act_and_prepare(
        self, arch: Architecture, params: Params, g: Element, g_inv: Element | None, state: Any, inputs: Tensor
    ) -> tuple[Params, Element, Any]:
        """:meth:`act`, plus the state at the moved weights (groups whose action already computes it
        return it for free)."""
        moved, rights = self.act(arch, params, g, g_inv, state)
        return moved, rights, self.prepare(arch, moved, inputs)

    @abstractmethod
    def act_near_identity(self, arch: Architecture, params: Params, algebra: Element, state: Any) -> Params:
        """Weights as a differentiable function of T that equals :meth:`act` with g = exp(T) to first
        order at T = 0: enough for the gradient of any objective at the identity."""

    def pullback(self, arch: Architecture, params: Params, state: Any, dparams: Sequence[Layer]) -> Element:
        """Chain rule into the Lie algebra: ∂f/∂T at T = 0 from ∂f/∂(W, b) at the current weights.

        By autograd through :meth:`act_near_identity`; groups override it with a closed form.
        """
        like = params[0][0]
        with torch.enable_grad():
            algebra = [t.requires_grad_() for t in self.zeros(arch, like)]
            pairs = [(m, d) for m, d in zip(flat(self.act_near_identity(arch, params, algebra, state)), flat(dparams),
                                            strict=True) if m.requires_grad]
            grads = torch.autograd.grad([m for m, _ in pairs], algebra, [d for _, d in pairs], allow_unused=True)
        return [torch.zeros_like(a) if d is None else d for a, d in zip(algebra, grads, strict=True)]

    def _apply(self, params: Params, g: Element, right: Element) -> Params:
        moved: Params = []
        last = len(params) - 1
        for m, (w, b) in enumerate(params):
            if m < last:
                w = self._left(g[m], w)
                b = None if b is None else self._left(g[m], b)
            if m > 0:
                w = self._right(w, right[m - 1])
            moved.append((w, b))
        return moved


class ExactGroup(Group):
    """A group whose action ``W_m ↦ g_m W_m g_{m-1}⁻¹`` preserves the output for every input.

    Because L(g·w) = L(w) for all w, the gradient transforms covariantly,
    ∇_{W_m} L(g·w) = g_m⁻ᵀ ∇_{W_m} L(w) g_{m-1}ᵀ and ∇_{b_m} L(g·w) = g_m⁻ᵀ ∇_{b_m} L(w),
    so an objective that depends only on the gradient is known along the whole group from one
    gradient at w (DESIGN.md §3, "Cost").
    """

    exact = True
    tolerance_float32 = 1e-4
    tolerance_float64 = 1e-9

    def act(
        self, arch: Architecture, params: Params, g: Element, g_inv: Element | None, state: Any = None
    ) -> tuple[Params, Element]:
        if g_inv is None:
            raise ValueError(f"group {self.name!r} needs the exact inverse of g to act.")
        return self._apply(params, g, g_inv), g_inv

    def act_near_identity(self, arch: Architecture, params: Params, algebra: Element, state: Any = None) -> Params:
        one = self.identity(arch, algebra[0])
        return self._apply(params, [i + t for i, t in zip(one, algebra, strict=True)],
                           [i - t for i, t in zip(one, algebra, strict=True)])

    def pullback(self, arch: Architecture, params: Params, state: Any, dparams: Sequence[Layer]) -> Element:
        """Closed form: from dW_m' = dT_m W_m − W_m dT_{m-1}, db_m' = dT_m b_m,
        ∂f/∂T_m = V_m W_mᵀ + v_m b_mᵀ − W_{m+1}ᵀ V_{m+1} (diagonals for diagonal groups)."""
        out: Element = []
        for m in range(arch.n_hidden):
            (w, b), (v, vb) = params[m], dparams[m]
            w_next, v_next = params[m + 1][0], dparams[m + 1][0]
            vb = cast(Tensor, vb)  # only read where b is not None; dparams share params' bias pattern
            if self.diagonal:
                d = (v * w).sum(1) - (w_next * v_next).sum(0)
                d = d if b is None else d + vb * b
            else:
                d = v @ w.mT - w_next.mT @ v_next
                d = d if b is None else d + torch.outer(vb, b)
            out.append(d)
        return out

    def transform_gradients(self, grads: Sequence[Layer], g: Element, g_inv: Element) -> list[Layer]:
        """∇L at g·w from ∇L at w (see the class docstring)."""
        out: list[Layer] = []
        last = len(grads) - 1
        for m, (gw, gb) in enumerate(grads):
            if m < last:
                gw = self._left(g_inv[m], gw) if self.diagonal else g_inv[m].mT @ gw
                if gb is not None:
                    gb = self._left(g_inv[m], gb) if self.diagonal else g_inv[m].mT @ gb
            if m > 0:
                gw = self._right(gw, g[m - 1] if self.diagonal else g[m - 1].mT)
            out.append((gw, gb))
        return out

    def algebra_gradient(self, grads: Sequence[Layer], dgrads: Sequence[Layer]) -> Element:
        """∂f/∂T_m at T = 0 for an objective f of the gradients G, given E = ∂f/∂G.

        From G_m(T) ≈ G_m − T_mᵀ G_m + G_m T_{m-1}ᵀ:  ∂f/∂T_m = E_{m+1}ᵀ G_{m+1} − G_m E_mᵀ − g_{b,m} e_{b,m}ᵀ
        (its diagonal for diagonal groups). No autograd: a handful of small matrix products.
        """
        out: Element = []
        for m in range(len(grads) - 1):
            (gw, gb), (ew, eb) = grads[m], dgrads[m]
            gw_next, ew_next = grads[m + 1][0], dgrads[m + 1][0]
            eb = cast(Tensor, eb)  # only read where gb is not None; dgrads share grads' bias pattern
            if self.diagonal:
                d = (ew_next * gw_next).sum(0) - (gw * ew).sum(1)
                if gb is not None:
                    d = d - gb * eb
            else:
                d = ew_next.mT @ gw_next - gw @ ew.mT
                if gb is not None:
                    d = d - torch.outer(gb, eb)
            out.append(d)
        return out


def first_violation(arch: Architecture, ok: str) -> tuple[int, nn.Module] | None:
    """The first hidden-layer activation lacking trait ``ok``, as (Sequential index, module)."""
    for chain in arch.chains[:-1]:
        for a in chain:
            if not getattr(a.traits, ok):
                return a.index, a.module
    return None


class RescaleGroup(ExactGroup):
    """Positive rescaling of hidden units: W_m → diag(s) W_m, b_m → diag(s) b_m, W_{m+1} → W_{m+1} diag(1/s).

    Exact for every input when the activation is positively homogeneous (ReLU, LeakyReLU, Identity).
    Elements are the vectors s > 0 (``exp``: s = exp(θ); ``linear``: s = 1 + θ, which must stay positive).
    """

    name = "rescale"
    diagonal = True

    def check(self, arch: Architecture) -> None:
        bad = first_violation(arch, "homogeneous")
        if bad:
            raise SymmetryError(
                f"{describe(*bad)}: group 'rescale' needs a positively homogeneous activation "
                "(ReLU, LeakyReLU or Identity) between Linear layers; use 'gl-data' for invertible "
                "activations such as Tanh."
            )


class LinearGroup(ExactGroup):
    """GL(n) between consecutive layers of a linear network: W_m → g W_m, b_m → g b_m, W_{m+1} → W_{m+1} g⁻¹.

    Exact for every input when the activation between the layers is the identity.
    """

    name = "linear"

    def check(self, arch: Architecture) -> None:
        bad = first_violation(arch, "identity")
        if bad:
            raise SymmetryError(
                f"{describe(*bad)}: group 'linear' needs identity activations between Linear layers "
                "(a linear network); use 'rescale' for ReLU or LeakyReLU, or 'gl-data' for invertible "
                "activations."
            )










