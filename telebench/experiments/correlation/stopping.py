"""Early stopping on calibration data: train until the loss on a holdout of the training split stops improving.

The holdout is carved from the training split by a seeded permutation (`EarlyStoppingSpec.seed`), the
same for every network of a case; the networks train, and are measured, on the rest. The validation
split, whose loss the study correlates the metrics with, plays no part in training or stopping: a
network stopped on its own validation loss would have that loss selected, and biased low, by the very
rule that ends its training.

Every `every_epochs` epochs the holdout loss is evaluated; after `patience` checks in a row without
an improvement of more than `min_delta` on the best so far, or at `max_epochs`, training stops and the
weights of the best check are restored, so the metrics are measured on them. A non-finite holdout loss
is never an improvement; a network without a single finite one has no weights to restore.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from telebench.experiments.correlation.schema import EarlyStoppingSpec
from telebench.training.batches import BatchStream
from telebench.training.dataset_bundle import DatasetBundle
from telebench.training.evaluation import evaluate
from telebench.training.holdout import carve_holdout
from telebench.training.step import optimizer_step, state_snapshot

Holdout = tuple[torch.Tensor, torch.Tensor]


def split_holdout(data: DatasetBundle, stop: EarlyStoppingSpec) -> tuple[DatasetBundle, Holdout]:
    """The dataset with its training split reduced to the rows the networks train on, and the holdout
    (`stop.holdout` rows drawn with `stop.seed`; both keep the rows' order). The validation and test splits
    are passed through untouched."""
    return carve_holdout(data, stop.holdout, stop.seed)


@dataclass
class Stopped:
    """How an early-stopped training ended: what a network's record keeps of it."""

    steps: int  # optimizer steps taken, up to the stop
    stop_epoch: float  # epochs trained when it stopped
    best_epoch: float | None  # epochs trained by the restored weights; None: no finite holdout loss
    best_holdout_loss: float | None
    holdout_losses: list[float | None] = field(default_factory=list)  # at each check (None: not finite)

    def fields(self) -> dict[str, Any]:
        return {"steps": self.steps, "stop_epoch": self.stop_epoch, "best_epoch": self.best_epoch,
                "best_holdout_loss": self.best_holdout_loss, "holdout_losses": list(self.holdout_losses)}


def train_early_stopping(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Any, stream: BatchStream,
                         holdout: Holdout, task: str, stop: EarlyStoppingSpec) -> Stopped:
    """Train ``model`` on ``stream`` until the holdout loss stops improving, then restore the best weights."""
    per_epoch = stream.steps_per_epoch
    every = max(1, round(stop.every_epochs * per_epoch))
    total = stop.max_epochs * per_epoch
    best_loss, best_step, best_state = math.inf, None, None
    losses: list[float | None] = []
    step = waited = 0
    while step < total and waited < stop.patience:
        for _ in range(min(every, total - step)):
            x, y = stream.next()
            optimizer_step(model, optimizer, loss_fn, x, y)
            step += 1
        loss, _ = evaluate(model, *holdout, task)
        losses.append(loss if math.isfinite(loss) else None)
        if math.isfinite(loss) and loss < best_loss - stop.min_delta:
            best_loss, best_step, waited = loss, step, 0
            best_state = state_snapshot(model)
        else:
            waited += 1
    if best_state is not None:
        model.load_state_dict(best_state)
    return Stopped(step, step / per_epoch, None if best_step is None else best_step / per_epoch,
                   None if best_step is None else best_loss, losses)
