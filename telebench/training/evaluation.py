"""The training loss of each task, and the held-out evaluation that reports it with accuracy.

Evaluation keeps its sums on the device and reads them once, so measuring a model costs one host
synchronisation per call, not one per batch.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telebench.symmetry.losses import class_log_softmax
from telebench.training.dataset_bundle import CLASSIFICATION, REGRESSION

TRAIN_EVAL_SIZE = 10_000
"""Training loss is measured on (at most) this many training samples, a fixed prefix, so evaluation
cost stays bounded; every kind (pairs, correlation) and their time estimates use it."""


class TaskLoss(Protocol):
    """A torch functional loss: mean over the batch by default, or `reduction="sum"`."""

    def __call__(self, input: Tensor, target: Tensor, /, *, reduction: str = "mean") -> Tensor: ...


def loss_fn_for(task: str) -> TaskLoss:
    """Mean cross-entropy for classification, mean squared error for regression."""
    if task == CLASSIFICATION:
        return F.cross_entropy
    if task == REGRESSION:
        return F.mse_loss
    raise ValueError(f"unknown task {task!r}; expected {CLASSIFICATION!r} or {REGRESSION!r}")


def _summed_loss(loss_fn: TaskLoss, out: Tensor, y: Tensor, task: str) -> Tensor:
    """The summed loss of one batch; cross-entropy through :func:`class_log_softmax` (the same sum,
    faster for few classes)."""
    if task == CLASSIFICATION and out.dim() == 2:
        return F.nll_loss(class_log_softmax(out), y, reduction="sum")
    return loss_fn(out, y, reduction="sum")


def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, task: str, batch_size: int = 4096
) -> tuple[float, float | None]:
    """(mean loss, accuracy or None) over all of x, in batches, without gradients. Sums stay on the
    device until the end, so there is one host synchronisation per call, not one per batch."""
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty set")
    loss_fn = loss_fn_for(task)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                out = model(xb)
                loss_sum += _summed_loss(loss_fn, out, yb, task).double()
                if task == CLASSIFICATION:
                    correct += (out.argmax(1) == yb).sum()
    finally:
        model.train(was_training)
    total_loss, total_correct = torch.stack([loss_sum, correct.double()]).tolist()  # the one sync
    if task == CLASSIFICATION:
        return total_loss / len(y), total_correct / len(y)
    return total_loss / y.numel(), None  # MSE averages over every output, as loss_fn does
