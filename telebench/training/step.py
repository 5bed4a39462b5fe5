"""One training step, the unit of work every training clock measures."""

from __future__ import annotations

import torch
from torch import nn


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step: the work the training clock measures (besides data and teleports)."""
    optimizer.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    optimizer.step()


