"""The loss as a function of the network's output: its value, gradient and Hessian-vector product.

The hand-written backward and R-operator passes in :mod:`telebench.symmetry.problem` need only
these three things from ``loss_fn``. Any loss works through autograd; the two losses the training
loop uses, mean cross-entropy with class-index targets and mean squared error, also have closed
forms, which skip autograd's graph building (about a third of a gradient evaluation per teleport
step at the paper's batch of 200).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]
Hvp = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class OutputDerivatives:
    """At one output: the loss (None unless asked for), ∂ℓ/∂output, and v ↦ ∇²ℓ·v (None unless asked for)."""

    loss: Tensor | None
    gradient: Tensor
    hvp: Hvp | None


class Head:
    """Autograd on ``loss_fn(output_modules(out), targets)``: works for any twice-differentiable loss."""

    def __init__(self, loss_fn: LossFn, targets: Tensor, output: Callable[[Tensor], Tensor]) -> None:
        self.loss_fn, self.targets, self.output = loss_fn, targets, output

    def loss(self, out: Tensor) -> Tensor:
        """The loss alone at the last Linear layer's output (no graph)."""
        with torch.no_grad():
            return self.loss_fn(self.output(out), self.targets)

    def derivatives(self, out: Tensor, second: bool, loss: bool = True) -> OutputDerivatives:
        """Autograd computes the loss anyway: ``loss=False`` only drops it from the result."""
        with torch.enable_grad():
            leaf = out.detach().requires_grad_()
            value = self.loss_fn(self.output(leaf), self.targets)
            if value.dim() != 0:
                raise ValueError(f"loss_fn must return a scalar, got a tensor of shape {tuple(value.shape)}.")
            (gradient,) = torch.autograd.grad(value, leaf, create_graph=second)

        def hvp(v: Tensor) -> Tensor:
            with torch.enable_grad():
                return torch.autograd.grad(gradient, leaf, v, retain_graph=True)[0]

        return OutputDerivatives(value.detach() if loss else None, gradient.detach(), hvp if second else None)


def class_log_softmax(out: Tensor) -> Tensor:
    """log-softmax over the classes of ``batch × classes`` logits, reduced as dim 0 of the transposed
    logits: on CPU, torch's last-dimension (log-)softmax is several times slower for few classes
    (≈ 40 µs against ≈ 12 µs for 200 × 10, 300 µs against 100 µs for 1437 × 10 on one thread), the
    same numbers either way. (The transposed layout comes back: ``.contiguous()`` if that matters.)"""
    return F.log_softmax(out.mT, 0).mT


class CrossEntropyHead(Head):
    """Mean cross-entropy over class indices: ∇ = (p − onehot(y))/b, ∇²v = (p/b) ⊙ (v − pᵀv).

    With the Hessian-vector product, the one-hot targets (over b) are made once per head, so a step
    costs a softmax and three elementwise operations; without it, −1/b is added at the targets in
    place (one scatter, no one-hot). When the loss is asked for, one log-softmax gives both it and p
    (p = exp of it, the same numbers up to rounding). Both reduce over the classes as dim 0 of the
    transposed logits (:func:`class_log_softmax`)."""

    def derivatives(self, out: Tensor, second: bool, loss: bool = True) -> OutputDerivatives:
        b = out.shape[0]
        value = None
        if loss:  # p = exp(log-softmax): one reduction serves the loss and p
            log_p = class_log_softmax(out)
            value = F.nll_loss(log_p, self.targets)
            p = _layout_of(out, log_p.exp())
        else:
            p = _layout_of(out, out.mT.softmax(0).mT)
        pb = p / b
        hvp = None
        if second:
            def hvp(v: Tensor) -> Tensor:
                return pb * (v - (p * v).sum(-1, keepdim=True))

            gradient = pb - self._onehot(out)
        else:  # pb is nobody else's: subtract 1/b at the targets in place (no one-hot formed)
            gradient = pb.scatter_add_(1, self._index, _minus_reciprocal(b, out.dtype, out.device))
        return OutputDerivatives(value, gradient, hvp)

    def loss(self, out: Tensor) -> Tensor:
        return F.nll_loss(class_log_softmax(out), self.targets)

    @functools.cached_property
    def _index(self) -> Tensor:
        """The targets as a ``b × 1`` int64 index (scatter takes no other; uint8 labels are valid)."""
        return self.targets.to(torch.int64)[:, None]

    def _onehot(self, like: Tensor) -> Tensor:
        cached = getattr(self, "_onehot_cache", None)
        if cached is None or cached.dtype != like.dtype or cached.stride() != like.stride() or cached.shape != like.shape:
            cached = torch.zeros_like(like).scatter_(1, self._index, 1.0 / like.shape[0])
            self._onehot_cache = cached
        return cached


def _layout_of(out: Tensor, t: Tensor) -> Tensor:
    """``t`` in the memory layout of the logits ``out``: row by row (contiguous), or column by column
    as the gl-data kernel keeps narrow layers (:func:`~telebench.symmetry.linalg.column_major_layer`),
    so the elementwise operations between them do not mix layouts."""
    if t.stride() == out.stride() or not (out.is_contiguous() or out.mT.is_contiguous()):
        return t
    return t.contiguous() if out.is_contiguous() else t.mT.contiguous().mT


@functools.lru_cache(maxsize=16)
def _minus_reciprocal(b: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A ``b × 1`` column of −1/b, made once per (size, dtype, device) and outside inference mode."""
    with torch.inference_mode(False):
        return torch.full((b, 1), -1.0 / b, dtype=dtype, device=device)


class MeanSquaredErrorHead(Head):
    """Mean squared error over every output entry: ∇ = 2(out − t)/N, ∇²v = 2v/N. The targets are
    kept in the outputs' layout (copied once per layout), so the difference never mixes layouts."""

    def derivatives(self, out: Tensor, second: bool, loss: bool = True) -> OutputDerivatives:
        scale = 2.0 / out.numel()
        targets = self._targets_like(out)
        return OutputDerivatives(F.mse_loss(out, targets) if loss else None, (out - targets).mul_(scale),
                                 (lambda v: v * scale) if second else None)

    def _targets_like(self, out: Tensor) -> Tensor:
        if self.targets.stride() == out.stride() or self.targets.shape != out.shape:
            return self.targets
        cached = getattr(self, "_targets_cache", None)
        if cached is None or cached.stride() != out.stride():
            cached = self._targets_cache = _layout_of(out, self.targets)
        return cached


def _plain(loss_fn: LossFn, function: LossFn, module: type[nn.Module], **defaults: object) -> bool:
    """Whether ``loss_fn`` is ``function`` itself or an instance of ``module`` left at its defaults."""
    if loss_fn is function:
        return True
    return type(loss_fn) is module and all(getattr(loss_fn, k, None) == v for k, v in defaults.items())


def head_for(loss_fn: LossFn, targets: Tensor, output: Callable[[Tensor], Tensor] | None, out_features: int) -> Head:
    """The closed-form head when ``loss_fn`` is one of the known losses used plainly, else autograd."""
    if output is None:
        if (
            _plain(loss_fn, F.cross_entropy, nn.CrossEntropyLoss, weight=None, reduction="mean", label_smoothing=0.0)
            and targets.dim() == 1
            and not targets.is_floating_point()
            and bool((targets >= 0).all())  # no ignore_index targets (one read, before the search)
        ):
            return CrossEntropyHead(loss_fn, targets, lambda o: o)
        if (
            _plain(loss_fn, F.mse_loss, nn.MSELoss, reduction="mean")
            and targets.is_floating_point()
            and targets.dim() == 2
            and targets.shape[1] == out_features
        ):
            return MeanSquaredErrorHead(loss_fn, targets, lambda o: o)
    return Head(loss_fn, targets, output or (lambda o: o))
