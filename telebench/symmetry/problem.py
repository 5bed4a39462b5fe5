"""The loss on one batch as a function of an MLP's weights: what objectives differentiate."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telebench.symmetry import phases
from telebench.symmetry.architecture import Architecture, Layer, Params, flat, unflat
from telebench.symmetry.losses import Head, Hvp, LossFn, head_for


@dataclass(frozen=True)
class Forward:
    """One forward pass through the hidden layers: per hidden layer m, the pre-activations Z_m, the
    activations H_m = σ(Z_m) and the slopes σ'(Z_m), all detached."""

    z: list[Tensor]
    h: list[Tensor]
    slope: list[Tensor]


Derivatives = Callable[[Tensor], tuple[Tensor, Tensor, "Tensor | None"]]
_LEAKY_BACKWARD = torch.ops.aten.leaky_relu_backward.default
_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward.default


@functools.lru_cache(maxsize=16)
def _one(dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 0-d one, made once and outside inference mode (so any caller may use it)."""
    with torch.inference_mode(False):
        return torch.ones((), dtype=dtype, device=device)


def activations(arch: Architecture) -> list[Derivatives | None]:
    """Per hidden layer, σ, σ' and σ'' (None: zero) in one call where the chain is a single
    LeakyReLU or ReLU: the numbers of :meth:`Architecture.derivatives` (the same operators),
    without its general dispatch; None elsewhere (the architecture's own closed forms apply)."""
    out: list[Derivatives | None] = []
    for chain in arch.chains[:-1]:
        module = chain[0].module if len(chain) == 1 else None
        if type(module) is nn.LeakyReLU:
            out.append(functools.partial(_leaky, module.negative_slope))
        elif type(module) is nn.ReLU:
            out.append(_relu)
        else:
            out.append(None)
    return out


def _leaky(alpha: float, z: Tensor) -> tuple[Tensor, Tensor, None]:
    return F.leaky_relu(z, alpha), _LEAKY_BACKWARD(_one(z.dtype, z.device), z, alpha, False), None


def _relu(z: Tensor) -> tuple[Tensor, Tensor, None]:
    return F.relu(z), _THRESHOLD_BACKWARD(_one(z.dtype, z.device), z, 0.0), None


def inference_safe(problem: Problem) -> bool:
    """Whether a search may run under ``torch.inference_mode`` (cheaper operators: ~10% of a small
    net's gl-data search): the loss head and every hidden activation's σ', σ'' are closed forms, so
    nothing inside needs autograd. What such a search hands back goes through :func:`normal`."""
    if type(problem.head).derivatives is Head.derivatives:
        return False
    return all(a.slope is not None and (a.curvature is not None or a.traits.piecewise_linear)
               for chain in problem.arch.chains[:-1] for a in chain)


def normal(t: Tensor) -> Tensor:
    """``t``, as an ordinary tensor if it was made in inference mode (call outside it): inference
    tensors cannot be changed in place or enter autograd later."""
    return t.clone() if t.is_inference() else t


def forward_pass(arch: Architecture, params: Sequence[Layer], inputs: Tensor) -> Forward:
    """Run the hidden layers on prepared ``inputs``, keeping what a hand-written backward needs."""
    zs, hs, slopes = [], [], []
    x = inputs
    with torch.no_grad():
        for m, ((w, b), act) in enumerate(zip(params[:-1], activations(arch), strict=False)):
            z = F.linear(x, w, b)
            x, slope = arch.activate_with_slope(m, z) if act is None else act(z)[:2]
            zs.append(z)
            hs.append(x)
            slopes.append(slope)
    return Forward(zs, hs, slopes)


@dataclass(frozen=True)
class Problem:
    """A fixed batch and loss: ``loss(params) = loss_fn(model_with(params)(inputs), targets)``.

    ``inputs`` are already prepared (prefix modules applied, on the model's device and dtype).
    """

    arch: Architecture
    inputs: Tensor
    targets: Tensor
    loss_fn: LossFn

    @functools.cached_property
    def start(self) -> Params:
        """The model's live weights (:meth:`Architecture.params`, views of its storage), read once per
        problem: a teleport's search and checks all start from them."""
        return self.arch.params()

    @functools.cached_property
    def head(self) -> Head:
        """How the loss is differentiated w.r.t. the output (chosen once per problem)."""
        chain = self.arch.chains[-1]
        last = len(self.arch.linears) - 1
        output = (lambda out: self.arch.activate(last, out)) if chain else None
        return head_for(self.loss_fn, self.targets, output, self.arch.linears[-1].out_features)

    def loss(self, params: Sequence[Layer]) -> Tensor:
        value = self.loss_fn(self.arch.forward(params, self.inputs), self.targets)
        if value.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar, got a tensor of shape {tuple(value.shape)}.")
        return value

    def head_loss(self, params: Sequence[Layer]) -> Tensor:
        """:meth:`loss` through the loss head (the same number; the closed-form heads skip torch's slow
        last-dimension log-softmax), without a graph."""
        with torch.no_grad():
            x = self.inputs
            for m, (w, b) in enumerate(params[:-1]):
                x = self.arch.activate(m, F.linear(x, w, b))
            return self.head.loss(F.linear(x, *params[-1]))

    def forward(self, params: Sequence[Layer]) -> Forward:
        """The hidden layers' activations and slopes at ``params`` (no graph)."""
        return forward_pass(self.arch, params, self.inputs)

    def gradients(
        self, params: Sequence[Layer], *, create_graph: bool = False, forward: Forward | None = None
    ) -> tuple[Tensor, list[Layer]]:
        """The loss and ∂L/∂(W, b) for every layer at ``params``.

        ``create_graph=True`` keeps the gradient differentiable (autograd through the whole network,
        as an exact Hessian-vector product needs). Otherwise the gradient is back-propagated by hand
        through the stored activations of ``forward`` (computed here if not given), with autograd
        only on ``loss_fn``: the same arithmetic as autograd, without building a graph, and free of
        a second forward pass when the caller already has one.
        """
        if create_graph:
            return self._autograd_gradients(params)
        loss, grads, _ = self._backward(params, self.forward(params) if forward is None else forward, False)
        return loss, grads

    def gradient_and_hvp(
        self, params: Sequence[Layer], forward: Forward | None = None
    ) -> tuple[Tensor, list[Layer], list[Layer]]:
        """The loss, the gradient G and the Hessian-vector product H·G, exactly, in about two gradients' time.

        Pearlmutter's R-operator written out for the MLP: a tangent forward pass along G
        (Ż_m = Ḣ_{m-1} W_mᵀ + H_{m-1} G_mᵀ + g_m, Ḣ_m = σ'(Z_m) Ż_m), the loss's own Hessian on the
        output from its :class:`~telebench.symmetry.losses.Head`, then a tangent backward pass
        (Ġ_m = δ̇_mᵀ H_{m-1} + δ_mᵀ Ḣ_{m-1}, δ̇_{m-1} = (δ̇_m W_m + δ_m G_m) ⊙ σ' + (δ_m W_m) ⊙ σ'' ⊙ Ż_{m-1}).
        Same result as a double backward through autograd, without building the graph of the graph.
        """
        with phases.span(phases.OBJECTIVE):
            fwd = self.forward(params) if forward is None else forward
            loss, grads, state = self._backward(params, fwd, True)
        output_hvp, deltas, pulled = state
        assert output_hvp is not None
        last = len(params) - 1
        x = self.inputs
        with phases.span(phases.OBJECTIVE_GRAD), torch.no_grad():
            z_dot: list[Tensor] = []
            h_dot: list[Tensor] = []
            for m in range(last + 1):
                gw, gb = grads[m]
                zd = F.linear(x if m == 0 else fwd.h[m - 1], gw, gb)
                if m > 0:
                    zd = torch.addmm(zd, h_dot[-1], params[m][0].mT)
                z_dot.append(zd)
                if m < last:
                    h_dot.append(fwd.slope[m] * zd)
            d_dot = output_hvp(z_dot[-1])
            hvp: list[Layer] = []
            for m in range(last, -1, -1):
                w, b = params[m]
                delta = deltas[m]
                gw_dot = d_dot.mT @ (x if m == 0 else fwd.h[m - 1])
                if m > 0:
                    gw_dot = torch.addmm(gw_dot, delta.mT, h_dot[m - 1])
                hvp.append((gw_dot, None if b is None else d_dot.sum(0)))
                if m > 0:
                    d_dot = torch.addmm(delta @ grads[m][0], d_dot, w) * fwd.slope[m - 1]
                    curvature = self.arch.curvature(m - 1, fwd.z[m - 1])
                    if curvature is not None:
                        d_dot = d_dot + pulled[m - 1] * curvature * z_dot[m - 1]
        hvp.reverse()
        return loss, grads, hvp

    def _backward(
        self, params: Sequence[Layer], fwd: Forward, keep: bool
    ) -> tuple[Tensor, list[Layer], tuple[Hvp | None, list[Tensor], list[Tensor]]]:
        """Back-propagation by hand through the stored activations; only ``loss_fn`` goes through
        its :class:`~telebench.symmetry.losses.Head` (autograd unless a closed form is known).

        With ``keep``, also returns what the R-operator needs: the loss's Hessian-vector product at
        the output, and per layer δ_m = ∂L/∂Z_m and δ_{m+1} W_{m+1} (before the slope)."""
        w_out, b_out = params[-1]
        last = len(params) - 1
        with torch.no_grad():
            at_output = self.head.derivatives(F.linear(fwd.h[-1], w_out, b_out), second=keep)
        grads: list[Layer] = []
        deltas: list[Tensor] = [at_output.gradient]
        pulled: list[Tensor] = []
        with torch.no_grad():
            delta = deltas[0]
            for m in range(last, -1, -1):
                w, b = params[m]
                x = self.inputs if m == 0 else fwd.h[m - 1]
                grads.append((torch.mm(delta.mT, x), None if b is None else delta.sum(0)))
                if m > 0:
                    back = torch.mm(delta, w)
                    delta = back * fwd.slope[m - 1]
                    pulled.append(back)
                    deltas.append(delta)
        grads.reverse()
        deltas.reverse()
        pulled.reverse()
        assert at_output.loss is not None
        return at_output.loss, grads, (at_output.hvp, deltas, pulled)

    def _autograd_gradients(self, params: Sequence[Layer]) -> tuple[Tensor, list[Layer]]:
        leaves = [t if t.requires_grad else t.detach().requires_grad_() for t in flat(params)]
        with torch.enable_grad():
            loss = self.loss(unflat(leaves, params))
            grads = torch.autograd.grad(loss, leaves, create_graph=True)
        return loss, unflat(grads, params)
