"""The gl-data search for the gradient-norm objective, at the cost floor DESIGN.md §3 names.

The same K steps as the generic search (each from the identity: ∂f/∂T at T = 0, ``T = ±lr·∂f/∂T``,
apply ``g = exp(T)``), with the same numbers up to rounding (tests/test_symmetry_same_path.py pins
the path against the code this replaced), computed by :class:`~telebench.symmetry.gl_kernel.GradNormKernel`
and applied layer by layer:

* the input layer is never multiplied by the inputs inside the loop: its pre-activations move as
  ``Z₀ ↦ Z₀ g₀ᵀ`` (exact, that layer has no right factor) and its weight and bias as ``g₀ W₀``,
  ``g₀ b₀``, either composed into one ``g_K ⋯ g₁`` applied once at the end (dense layers narrower
  than the inputs) or step by step (layers wider than the batch, whose elements are low-rank);
* layers wider than the batch keep ``g = I + Aᵀ φ(cBAᵀ) cB`` and the right factor
  ``I + Eᵀ K⁻¹ σ(gZ)`` factored (:class:`~telebench.symmetry.factors.LowRank`), so no step forms,
  multiplies or exponentiates a width × width matrix beyond applying the move to the weights, and
  a weight the search already owns is moved in place;
* a right factor ``W (I + Eᵀ K⁻¹ P)`` is applied as ``W + ((W Eᵀ) K⁻¹) P`` when the next layer is
  narrower than this one (the output layer always is), and ``K⁻¹ P`` is formed only if the
  transforms are read;
* the step size ``c`` is folded into the exponential's series instead of scaling ``T`` first, and
  ``T = c·∂f/∂T`` itself is formed only when the summed move is read;
* the per-step factors are stored, not composed: ``TeleportRecord.transforms`` composes them on
  first use (an optimizer-state transport), and ``Σ_k T_k`` is summed only when read;
* the last step's forward pass is the moved network's: the loss and ‖∇L‖² at the result come from
  one more backward pass over it (``Outcome.after``), not from a fresh forward pass;
* with a closed-form loss head and activations (:func:`~telebench.symmetry.problem.inference_safe`)
  the search runs under ``torch.inference_mode``, whose operators cost less (about a tenth of a
  small net's search, which is per-operator overhead); what it hands back is converted to ordinary
  tensors, the moved weights at the end and the record's factors when read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import torch
from torch import Tensor

from telebench.symmetry import phases
from telebench.symmetry.factors import Factor, IdentityPlus, LowRank, Steps, lmul, rmul_t
from telebench.symmetry.gl_kernel import (
    AlgebraStep,
    GradNormKernel,
    LayerParams,
    State,
    WideSolver,
    initial_state,
)
from telebench.symmetry.linalg import expm_all, linear, phi
from telebench.symmetry.objectives.base import Evaluation
from telebench.symmetry.problem import Problem, inference_safe, normal
from telebench.symmetry.search_types import Outcome, SearchOptions, capped


def _scale(grads: list[AlgebraStep], settings: SearchOptions) -> float | Tensor:
    scale: float | Tensor = settings.lr if settings.direction == "increase" else -settings.lr
    if settings.normalize_step:
        n = torch.stack([g.sqnorm() for g in grads]).sum().sqrt()
        scale = scale / n.clamp_min(torch.finfo(n.dtype).tiny)
    return scale


def _elements(grads: list[AlgebraStep], c: float | Tensor, parametrization: str,
              ) -> tuple[list[Factor], list[Tensor | Callable[[], Tensor]]]:
    """g for T = c·step in every hidden layer, and T (or a callable forming it when read). The dense
    layers' exponentials share one degree and number of squarings, with c folded into the series."""
    g: list[Factor] = []
    t: list[Tensor | Callable[[], Tensor]] = []
    exp = parametrization == "exp"
    dense = [step.dense for step in grads if step.dense is not None]
    dense_g: Iterator[Factor]
    if exp:
        dense_g = iter(expm_all(dense, scale=c))
    else:
        dense = [c * m for m in dense]
        dense_g = iter([IdentityPlus(m) for m in dense])
    dense_t = iter(dense)
    for step in grads:
        if step.dense is not None:
            g.append(next(dense_g))
            t.append(_lazy(c, next(dense_t)) if exp else next(dense_t))
            continue
        a, b = step.a, step.b
        assert a is not None and b is not None
        g.append(LowRank(a, b, c * phi(b @ a.mT, scale=c)) if exp else LowRank(a, c * b))
        t.append(_lazy_step(a, b, c))
    return g, t


def _lazy(c: float | Tensor, step: Tensor) -> Callable[[], Tensor]:
    """T = c·step, formed only when the summed move is read."""
    return lambda: c * step


def _lazy_step(a: Tensor, b: Tensor, c: float | Tensor) -> Callable[[], Tensor]:
    """T = c·aᵀb, formed only when the summed move is read."""
    return lambda: c * (a.mT @ b)


def _wide_right(w: Tensor, e: Tensor, solver: WideSolver, h: Tensor, owned: bool) -> tuple[Tensor, LowRank]:
    """``w @ (I + Eᵀ K⁻¹ P)`` and that factor; in the order of fewer operations, and in place when
    ``w`` is the search's own."""
    we = w @ e.mT
    if w.shape[0] < w.shape[1]:  # ((W Eᵀ) K⁻¹) P: K⁻¹ P (b × n) formed only if the factor is read
        coef, right = we @ solver.inverse, LowRank(e, lambda: solver.kinv(h))
    else:
        right = LowRank(e, solver.kinv(h))
        coef = we
    out = w.addmm_(coef, right.v if coef is we else h) if owned else torch.addmm(w, coef, right.v if coef is we else h)
    return out, right


def _sweep(kernel: GradNormKernel, params: LayerParams, state: State, g: list[Factor], owned: list[bool],
           ) -> tuple[State, list[Factor]]:
    """Move every layer but the input weight by ``g`` (replacing entries of ``params``) and return
    the moved network's state on the batch and the right factors used (as GLDataGroup's sweep)."""
    arch, acts = kernel.arch, kernel.acts
    cm = kernel.colmajor
    z = rmul_t(state.z[0], g[0], cm[0])  # Z₀ g₀ᵀ: exact, the input layer has no right factor
    new = State([], [], [], [], [])
    rights: list[Factor] = []
    last = arch.n_hidden
    for m in range(last):
        h, solver = new.add(arch, m, z, acts[m])
        e = state.h[m] - h
        w, b = params[m + 1]
        assert w is not None
        right: Factor
        if isinstance(solver, WideSolver):
            w, right = _wide_right(w, e, solver, h, owned[m + 1])  # (I + P⁺E)ᵀ = I + Eᵀ K⁻¹ P
        else:
            correction = solver.solve(e).mT  # (P⁺E)ᵀ: the factor is (I + P⁺E)ᵀ
            right = IdentityPlus(correction)
            w = torch.addmm(w, w, correction)
        if m + 1 < last:
            left = g[m + 1]
            w = left.lmul_(w) if isinstance(left, LowRank) else lmul(left, w)
            b = None if b is None else lmul(left, b)
            z = linear(h, w, b, cm[m + 1])
        rights.append(right)
        params[m + 1] = [w, b]
        owned[m + 1] = True
    return new, rights


class _InputLayer:
    """Layer 0's weight and bias under the steps' elements: dense elements are composed and applied
    once at the end when the layer is narrower than its inputs, low-rank ones applied as they come
    (in place once the search owns the weight)."""

    def __init__(self, w: Tensor, b: Tensor | None) -> None:
        self.w, self.b = w, b
        self.composed: Tensor | None = None
        self.defer = w.shape[0] < w.shape[1]
        self.owned = False

    def add(self, g: Factor) -> None:
        if isinstance(g, Tensor) and self.defer:
            self.composed = g if self.composed is None else g @ self.composed
            return
        if isinstance(g, LowRank) and self.owned:
            self.w = g.lmul_(self.w)
        else:
            self.w = lmul(g, self.w)
            self.owned = True
        self.b = None if self.b is None else lmul(g, self.b)

    def result(self) -> tuple[Tensor, Tensor | None]:
        if self.composed is None:
            return self.w, self.b
        return self.composed @ self.w, None if self.b is None else self.composed @ self.b


def gl_grad_norm_search(problem: Problem, settings: SearchOptions) -> Outcome:
    """The K-step gl-data search for ‖∇L‖² from the model's current weights (not modified)."""
    arch = problem.arch
    start = problem.start
    params: LayerParams = [[w, b] for w, b in start]
    record = Steps(arch.widths, start[0][0], diagonal=False)
    capped_search = settings.cap is not None
    owned = [False] * len(params)
    n_hidden = arch.n_hidden
    mode: AbstractContextManager[object] = torch.inference_mode() if inference_safe(problem) else torch.no_grad()
    with mode:
        with phases.span(phases.GROUP_ACTION):
            kernel = GradNormKernel(problem, settings.steps)
            state = initial_state(arch, params, problem.inputs, kernel.acts, kernel.colmajor)
        first = None
        taken = 0
        input_layer = _InputLayer(*start[0])
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
                state, rights = _sweep(kernel, params, state, g, owned)
                for m in range(n_hidden):
                    record.lefts[m].append(g[m])
                    record.rights[m].append(rights[m])
                    record.algebra[m].append(t[m])
            taken += 1
        with phases.span(phases.OBJECTIVE):
            final = kernel.backward(params, state, second=False, value=True, loss=True)
        with phases.span(phases.APPLY):
            params[0] = list(input_layer.result())
        if input_layer.composed is not None:
            record.known_lefts[0] = input_layer.composed
    first = final if first is None else first
    assert first.loss is not None and first.value is not None and final.loss is not None and final.value is not None
    # Ordinary tensors out (inference-mode ones cannot enter autograd or be changed in place later);
    # the record's factors are converted when read (factors.Steps).
    moved = [(normal(w), None if b is None else normal(b)) for w, b in params]  # type: ignore[arg-type]
    return Outcome(moved, record, taken, normal(first.loss), normal(first.value),
                   after=Evaluation(normal(final.value), normal(final.loss)))
