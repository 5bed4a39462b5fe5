"""One training step, the unit of work every training clock measures, and the step count of a budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the budget arithmetic below runs at suite validation, which should not import torch
    import torch
    from torch import nn

BUDGET_KINDS = ("steps", "epochs", "seconds")
UNBOUNDED_STEPS = 10**12  # a seconds budget: the training clock stops the run, not the step count


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Any, x: torch.Tensor,
                   y: torch.Tensor) -> None:
    """One training step: the work the training clock measures (besides data and teleports)."""
    optimizer.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    optimizer.step()


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s weights and buffers, for ``load_state_dict`` to restore later."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def budget_steps(kind: str, value: float, steps_per_epoch: int) -> int:
    """Optimizer steps of a budget: `steps` as given, `epochs` times the steps of an epoch (rounded to
    the nearest step, ties to even), and `seconds` UNBOUNDED_STEPS, since the clock ends the run."""
    if kind == "steps":
        return int(value)
    if kind == "epochs":
        return int(round(value * steps_per_epoch))
    if kind == "seconds":
        return UNBOUNDED_STEPS
    raise ValueError(f"budget kind must be one of {', '.join(BUDGET_KINDS)}, got {kind!r}")
