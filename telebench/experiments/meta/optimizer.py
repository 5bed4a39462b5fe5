"""One arm of the experiment as a module: how it updates the weights and whether it teleports.

The four arms of the paper are combinations of two choices (paper-facts §5):

=================  ===============  =========
arm                update           teleport
=================  ===============  =========
GD                 gd (fixed lr)    no
LSTM(update)       lstm             no
LSTM(lr, tele)     learned_lr       yes
LSTM(update, tele) lstm             yes
=================  ===============  =========

Each step reads the gradient at W_t, updates (W ← W − u), then teleports the updated weights with
the element the teleport LSTM wrote from the same gradient: the reference code's order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from telebench.experiments.meta.action import act, normalise
from telebench.experiments.meta.models import State, TeleportLSTM, UpdateLSTM, detach_state
from telebench.experiments.meta.task import Task, flatten, unflatten
from telebench.symmetry.architecture import Architecture, Params
from telebench.symmetry.groups import Group

UPDATES = ("gd", "learned_lr", "lstm")
LSTM_DTYPE = torch.float32  # the meta-optimizers stay in float32 whatever the task's dtype


@dataclass(frozen=True)
class ArmSpec:
    name: str
    update: str  # one of UPDATES
    teleport: bool
    lr: float | None = None  # gd: the step size; learned_lr: the first step's, before the LSTM has spoken


@dataclass(frozen=True)
class LSTMSpec:
    """Sizes and input handling of the meta-optimizers (see models.py for why these options exist)."""

    update_design: str = "coordinatewise"
    update_hidden: int = 20
    update_scale: float = 0.1
    teleport_hidden: int = 20
    preprocess: str = "log-sign"
    step_size_range: tuple[float, float] = (1e-7, 5e-3)


@dataclass(frozen=True)
class TeleportApply:
    """How a learned element becomes a move: the group, g = exp(T) or I + T, and ‖T‖_F."""

    group: Group
    parametrization: str = "exp"
    magnitude: float = 0.01


@dataclass
class RolloutState:
    """What an arm carries from one step to the next."""

    update: State | None
    teleport: State | None
    step_size: Tensor | None  # learned_lr: the step size the teleport LSTM wrote at the previous step

    def detached(self) -> RolloutState:
        return RolloutState(
            None if self.update is None else detach_state(self.update),
            None if self.teleport is None else detach_state(self.teleport),
            None if self.step_size is None else self.step_size.detach(),
        )


@dataclass
class StepResult:
    updated: Params  # after the update, before any teleport
    teleported: Params | None  # after the teleport (None for arms that do not teleport)
    state: RolloutState

    @property
    def params(self) -> Params:
        return self.updated if self.teleported is None else self.teleported


class MetaOptimizer(nn.Module):
    """An arm: an optional update LSTM, an optional teleport LSTM (with a step-size head for learned_lr)."""

    def __init__(self, arm: ArmSpec, arch: Architecture, lstm: LSTMSpec, teleport: TeleportApply | None) -> None:
        super().__init__()
        if arm.update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {arm.update!r}")
        if arm.update == "learned_lr" and not arm.teleport:
            raise ValueError("update 'learned_lr' reads its step size from the teleport LSTM, so it needs teleport")
        if arm.teleport and teleport is None:
            raise ValueError(f"arm {arm.name!r} teleports but no group was given")
        # not `self.apply`, which would hide nn.Module.apply
        self.arm, self.arch, self.teleport_action = arm, arch, teleport
        n_params = sum(lin.weight.numel() + (0 if lin.bias is None else lin.bias.numel()) for lin in arch.linears)
        self.update_lstm = (UpdateLSTM(n_params, lstm.update_design, lstm.update_hidden, lstm.preprocess,
                                       lstm.update_scale) if arm.update == "lstm" else None)
        self.teleport_lstm: TeleportLSTM | None = None
        if arm.teleport and teleport is not None:
            shapes = [teleport.group.algebra_shape(n) for n in arch.widths]
            step = None
            if arm.update == "learned_lr":
                assert arm.lr is not None
                step = (*lstm.step_size_range, arm.lr)
            self.teleport_lstm = TeleportLSTM(n_params, shapes, lstm.teleport_hidden, lstm.preprocess, step)

    @property
    def learns(self) -> bool:
        """Whether there is anything to meta-train (plain GD has nothing)."""
        return any(True for _ in self.parameters())

    def groups(self) -> Iterator[tuple[str, list[nn.Parameter]]]:
        """Parameter groups by role, so the update and teleport LSTMs can get their own meta learning rates."""
        if self.update_lstm is not None:
            yield "update", list(self.update_lstm.parameters())
        if self.teleport_lstm is not None:
            yield "teleport", list(self.teleport_lstm.parameters())

    def initial_state(self) -> RolloutState:
        like = torch.zeros((), dtype=LSTM_DTYPE)
        return RolloutState(
            None if self.update_lstm is None else self.update_lstm.initial_state(like),
            None if self.teleport_lstm is None else self.teleport_lstm.initial_state(like),
            None,
        )

    def step(self, task: Task, params: Params, grads: Params, state: RolloutState) -> StepResult:
        """One optimizer step from the gradient ``grads`` at ``params``."""
        grad = flatten(grads)
        lstm_in = grad.to(LSTM_DTYPE)
        algebra: list[Tensor] | None = None
        step_size: Tensor | None = None
        teleport_state = state.teleport
        if self.teleport_lstm is not None:
            algebra, step_size, teleport_state = self.teleport_lstm(lstm_in, state.teleport)
        update_state = state.update
        if self.update_lstm is not None:
            update, update_state = self.update_lstm(lstm_in, state.update)
        else:
            lr = state.step_size if state.step_size is not None else torch.tensor(self.arm.lr, dtype=grad.dtype)
            update = lr * grad
        updated = unflatten(flatten(params) - update.to(grad.dtype), params)
        teleported = None
        action = self.teleport_action
        if algebra is not None and action is not None:
            element = normalise([t.to(grad.dtype) for t in algebra], action.magnitude)
            teleported = act(action.group, self.arch, updated, element, action.parametrization, task.x)
        return StepResult(updated, teleported, RolloutState(update_state, teleport_state, step_size))
