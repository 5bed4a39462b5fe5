"""The gl-data search for the gradient-norm objective, at the cost floor DESIGN.md §3 names.

The same K steps as the generic search (each from the identity: ∂f/∂T at T = 0, ``T = ±lr·∂f/∂T``,
apply ``g = exp(T)``), with the same numbers up to rounding (tests/test_symmetry_same_path.py pins
the path against the code this replaced), computed by :class:`~telebench.symmetry.gl_kernel.GradNormKernel`
and applied layer by layer:

* the input layer is never multiplied by the inputs inside the loop: its pre-activations move as
  ``Z₀ ↦ Z₀ g₀ᵀ`` (exact, that layer has no right factor) and its weight as ``W₀ ↦ g₀ W₀``, either
  composed into one ``g_K ⋯ g₁`` applied once at the end (dense layers narrower than the inputs)
  or step by step (layers wider than the batch, whose elements are low-rank);
* layers wider than the batch keep ``g = I + Aᵀ φ(cBAᵀ) cB`` and the right factor
  ``I + Eᵀ K⁻¹ σ(gZ)`` factored (:class:`~telebench.symmetry.factors.LowRank`), so no step forms,
  multiplies or exponentiates a width × width matrix beyond applying the move to the weights;
* the per-step factors are stored, not composed: ``TeleportRecord.transforms`` composes them on
  first use (an optimizer-state transport), and ``Σ_k T_k`` is summed only when read;
* the last step's forward pass is the moved network's: the loss and ‖∇L‖² at the result come from
  one more backward pass over it (``Outcome.after``), not from a fresh forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from telebench.symmetry import phases
from telebench.symmetry.factors import Factor, IdentityPlus, LowRank, Steps, lmul, rmul, rmul_t
from telebench.symmetry.gl_kernel import (
    AlgebraStep,
    GradNormKernel,
    LayerParams,
    State,
    WideSolver,
    initial_state,
)
from telebench.symmetry.linalg import expm_all, phi
from telebench.symmetry.objectives.base import Evaluation
from telebench.symmetry.problem import Problem
from telebench.symmetry.search_types import Outcome, SearchOptions, capped


def _scale(grads: list[AlgebraStep], settings: SearchOptions) -> float | Tensor:
    scale: float | Tensor = settings.lr if settings.direction == "increase" else -settings.lr
    if settings.normalize_step:
        n = torch.stack([g.sqnorm() for g in grads]).sum().sqrt()
        scale = scale / n.clamp_min(torch.finfo(n.dtype).tiny)
    return scale


def _elements(grads: list[AlgebraStep], c: float | Tensor, parametrization: str,
              ) -> tuple[list[Factor], list[Tensor | Callable[[], Tensor]]]:
    """g for T = c·step in every hidden layer, and T (or a callable forming it, for a low-rank step).
    The dense layers' exponentials share one degree and number of squarings."""
    g: list[Factor] = []
    t: list[Tensor | Callable[[], Tensor]] = []
    dense = [c * step.dense for step in grads if step.dense is not None]
    exps: Iterator[Factor] = iter(expm_all(dense) if parametrization == "exp" else [IdentityPlus(m) for m in dense])
    dense_iter = iter(dense)
    for step in grads:
        if step.dense is not None:
            g.append(next(exps))
            t.append(next(dense_iter))
            continue
        a, b = step.a, step.b
        assert a is not None and b is not None
        core = c * phi(c * (b @ a.mT)) if parametrization == "exp" else None
        g.append(LowRank(a, b, core) if core is not None else LowRank(a, c * b))
        t.append(_lazy_step(a, b, c))
    return g, t


def _lazy_step(a: Tensor, b: Tensor, c: float | Tensor) -> Callable[[], Tensor]:
    """T = c·aᵀb, formed only when the summed move is read."""
    return lambda: c * (a.mT @ b)


def _sweep(problem: Problem, params: LayerParams, state: State, g: list[Factor]) -> tuple[State, list[Factor]]:
    """Move every layer but the input weight by ``g`` (replacing entries of ``params``) and return
    the moved network's state on the batch and the right factors used (as GLDataGroup's sweep)."""
    arch = problem.arch
    b0 = params[0][1]
    params[0][1] = None if b0 is None else lmul(g[0], b0)
    z = rmul_t(state.z[0], g[0])  # Z₀ g₀ᵀ: exact, the input layer has no right factor
    new = State([], [], [], [], [])
    rights: list[Factor] = []
    last = arch.n_hidden
    for m in range(last):
        h, solver = new.add(arch, m, z)
        e = state.h[m] - h
        right: Factor
        if isinstance(solver, WideSolver):
            right = LowRank(e, solver.kinv(h))  # (I + P⁺E)ᵀ = I + Eᵀ K⁻¹ P
        else:
            right = IdentityPlus(solver.solve(e).mT)  # (I + P⁺E)ᵀ
        rights.append(right)
        w, b = params[m + 1]
        assert w is not None
        w = rmul(w, right)  # a fresh matrix, so a low-rank element may update it in place
        if m + 1 < last:
            left = g[m + 1]
            w = left.lmul_(w) if isinstance(left, LowRank) else lmul(left, w)
            b = None if b is None else lmul(g[m + 1], b)
            z = F.linear(h, w, b)
        params[m + 1] = [w, b]
    return new, rights


class _InputLayer:
    """Layer 0's weight under the steps' elements: dense elements are composed and applied once at
    the end when the layer is narrower than its inputs, low-rank ones applied as they come."""

    def __init__(self, w: Tensor) -> None:
        self.w = w
        self.composed: Tensor | None = None
        self.defer = w.shape[0] < w.shape[1]

    def add(self, g: Factor) -> None:
        if isinstance(g, Tensor) and self.defer:
            self.composed = g if self.composed is None else g @ self.composed
        else:
            self.w = lmul(g, self.w)

    def result(self) -> Tensor:
        return self.w if self.composed is None else self.composed @ self.w


def gl_grad_norm_search(problem: Problem, settings: SearchOptions) -> Outcome:
    """The K-step gl-data search for ‖∇L‖² from the model's current weights (not modified)."""
    arch = problem.arch
    start = arch.params()
    like = start[0][0]
    params: LayerParams = [[w, b] for w, b in start]
    record = Steps(arch.widths, like, diagonal=False)
    capped_search = settings.cap is not None
    with torch.no_grad():
        with phases.span(phases.GROUP_ACTION):
            kernel = GradNormKernel(problem, settings.steps)
            state = initial_state(arch, params, problem.inputs)
        first = None
        taken = 0
        input_layer = _InputLayer(start[0][0])
        for _ in range(settings.steps):
            with phases.span(phases.OBJECTIVE):
                bw = kernel.backward(params, state, second=True, value=first is None or capped_search,
                                     loss=first is None)
            first = bw if first is None else first
            if capped_search and capped(bw.value, settings):  # type: ignore[arg-type]
                break
            with phases.span(phases.OBJECTIVE_GRAD):
                grads = kernel.algebra_gradient(params, state, bw)
            with phases.span(phases.APPLY):
                g, t = _elements(grads, _scale(grads, settings), settings.parametrization)
                input_layer.add(g[0])
                state, rights = _sweep(problem, params, state, g)
                for m in range(arch.n_hidden):
                    record.lefts[m].append(g[m])
                    record.rights[m].append(rights[m])
                    record.algebra[m].append(t[m])
            taken += 1
        with phases.span(phases.OBJECTIVE):
            final = kernel.backward(params, state, second=False, value=True, loss=True)
        with phases.span(phases.APPLY):
            params[0][0] = input_layer.result()
        if input_layer.composed is not None:
            record.known_lefts[0] = input_layer.composed
    first = final if first is None else first
    assert first.loss is not None and first.value is not None and final.loss is not None and final.value is not None
    moved = [(w, b) for w, b in params]
    return Outcome(moved, record, taken, first.loss, first.value,  # type: ignore[arg-type]
                   after=Evaluation(final.value, final.loss))
