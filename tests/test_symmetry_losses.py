"""Loss heads: closed forms for the training loop's losses agree with autograd, and are chosen only when valid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from telebench.symmetry.architecture import flat, parse, unflat
from telebench.symmetry.losses import CrossEntropyHead, Head, MeanSquaredErrorHead, head_for
from telebench.symmetry.problem import Problem

GEN = torch.Generator().manual_seed(0)
OUT = torch.randn(12, 4, dtype=torch.float64, generator=GEN)
V = torch.randn(12, 4, dtype=torch.float64, generator=GEN)
CLASSES = torch.randint(0, 4, (12,), generator=GEN)
VALUES = torch.randn(12, 4, dtype=torch.float64, generator=GEN)


@pytest.mark.parametrize("loss_fn,targets,kind", [
    (F.cross_entropy, CLASSES, CrossEntropyHead),
    (F.cross_entropy, CLASSES.to(torch.uint8), CrossEntropyHead),  # uint8 class indices are valid too
    (nn.CrossEntropyLoss(), CLASSES, CrossEntropyHead),
    (F.mse_loss, VALUES, MeanSquaredErrorHead),
    (nn.MSELoss(), VALUES, MeanSquaredErrorHead),
])
@pytest.mark.parametrize("second,loss", [(True, True), (True, False), (False, True), (False, False)])
def test_closed_form_heads_match_autograd(loss_fn, targets, kind, second, loss):
    head = head_for(loss_fn, targets, None, out_features=4)
    assert type(head) is kind
    slow = Head(loss_fn, targets, lambda o: o).derivatives(OUT, second=True)
    # Logits stored row by row, then column by column (as the gl-data kernel keeps narrow layers):
    # the same numbers, and cross-entropy's gradient in the logits' own layout.
    for out in (OUT, OUT, OUT.mT.contiguous().mT, OUT.mT.contiguous().mT):
        fast = head.derivatives(out, second=second, loss=loss)  # cached parts (one-hot, index) serve later calls
        assert (fast.loss is None) is not loss and (fast.hvp is None) is not second
        if loss:
            assert torch.allclose(fast.loss, slow.loss, rtol=1e-14)
        assert torch.allclose(fast.gradient, slow.gradient, rtol=1e-12, atol=1e-15)
        if kind is CrossEntropyHead:
            assert fast.gradient.stride() == out.stride()
        if second:
            assert torch.allclose(fast.hvp(V), slow.hvp(V), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("loss_fn,targets,output", [
    (nn.CrossEntropyLoss(label_smoothing=0.1), CLASSES, None),
    (nn.CrossEntropyLoss(weight=torch.ones(4, dtype=torch.float64)), CLASSES, None),
    (F.cross_entropy, torch.where(CLASSES == 0, -100, CLASSES), None),  # ignore_index targets
    (F.cross_entropy, torch.softmax(VALUES, -1), None),  # class probabilities
    (F.cross_entropy, CLASSES, torch.tanh),  # an output activation after the last Linear layer
    (nn.MSELoss(reduction="sum"), VALUES, None),
    (lambda out, t: (out - t).abs().mean(), VALUES, None),
])
def test_anything_else_goes_through_autograd(loss_fn, targets, output):
    assert type(head_for(loss_fn, targets, output, out_features=4)) is Head


@pytest.mark.parametrize("loss_fn,classification", [(F.cross_entropy, True), (F.mse_loss, False)])
def test_hvp_with_closed_form_heads_matches_a_double_backward(loss_fn, classification):
    torch.manual_seed(1)
    arch = parse(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.LeakyReLU(0.1), nn.Linear(6, 3)).double())
    targets = torch.randint(0, 3, (9,)) if classification else torch.randn(9, 3, dtype=torch.float64)
    problem = Problem(arch, torch.randn(9, 5, dtype=torch.float64), targets, loss_fn)
    assert type(problem.head) is not Head
    params = arch.params()
    loss, grads, hvp = problem.gradient_and_hvp(params)
    leaves = [t.clone().requires_grad_() for t in flat(params)]
    ref_grads = torch.autograd.grad(problem.loss(unflat(leaves, params)), leaves, create_graph=True)
    ref_hvp = torch.autograd.grad(ref_grads, leaves, [g.detach() for g in ref_grads])
    for a, b in zip(flat(grads) + flat(hvp), [g.detach() for g in ref_grads] + list(ref_hvp), strict=True):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-14)


def test_a_non_scalar_loss_is_refused_clearly():
    arch = parse(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    problem = Problem(arch, torch.randn(5, 3), torch.randn(5, 2), lambda out, t: (out - t) ** 2)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        problem.gradients(arch.params())
