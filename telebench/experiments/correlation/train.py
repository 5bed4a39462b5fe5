"""Train one network of a study and measure it: the unit of work a worker process runs.

Training is untimed (nothing here is a speed measurement), so workers may share the machine. A
network is fully determined by its case and seed: the seed fixes the initial weights and the batch
order; the metrics are measured on one fixed subset of the training split, the same for every
network of the case, so that their differences come from the networks, not from the data.

A case trains for its fixed budget, or with early stopping (:mod:`~telebench.experiments.correlation.stopping`):
then the training split loses its calibration holdout, and the networks train, are measured and have
their training loss taken on what is left.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from telebench.experiments.correlation.schema import EarlyStoppingSpec, MetricSpec, StudyCase
from telebench.experiments.correlation.stopping import Holdout, split_holdout, train_early_stopping
from telebench.symmetry.objectives.curvature import curvature
from telebench.symmetry.objectives.curvature_reference import curvature_reference
from telebench.symmetry.objectives.sharpness import sharpness
from telebench.training.batches import BatchStream
from telebench.training.clock import Clock
from telebench.training.dataset_bundle import DatasetBundle
from telebench.training.datasets import load_dataset
from telebench.training.evaluation import TRAIN_EVAL_SIZE, evaluate, loss_fn_for
from telebench.training.models import build_mlp
from telebench.training.optimizers import make_optimizer
from telebench.training.specs import DatasetSpec
from telebench.training.step import budget_steps, optimizer_step

MEASURE_SUBSET_SEED = 0  # the fixed permutation the measurement subset is taken from
DEVICE = "cpu"  # networks train where build_mlp puts them


@dataclass
class NetworkRecord:
    """One trained network: its losses at the end and every metric measured there."""

    case: str
    seed: int
    status: str  # ok | diverged
    steps: int
    train_loss: float
    val_loss: float
    val_accuracy: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    sharpness_by_radius: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    measure_seconds: float = 0.0
    message: str = ""
    # Recorded since early stopping (None in older records):
    train_accuracy: float | None = None
    train_size: int | None = None  # training samples the network trained on (the split less any holdout)
    stop_epoch: float | None = None  # early stopping: epochs trained when it stopped
    best_epoch: float | None = None  # early stopping: epochs trained by the restored, measured weights
    best_holdout_loss: float | None = None  # early stopping: the holdout loss of those weights
    holdout_losses: list[float | None] = field(default_factory=list)  # early stopping: at each check

    @property
    def gap(self) -> float:
        """Generalisation gap: validation loss minus training loss."""
        return self.val_loss - self.train_loss

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gap": self.gap}


@functools.lru_cache(maxsize=4)
def _data(spec: DatasetSpec, data_root: str | None) -> DatasetBundle:
    """Each worker process loads a dataset once, however many networks it trains on it."""
    return load_dataset(spec, data_root)


def measurement_batch(data: DatasetBundle, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed subset of the training split every network of a case is measured on."""
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(MEASURE_SUBSET_SEED))[:size]
    return data.x_train[order], data.y_train[order]


def measure(model: torch.nn.Sequential, data: DatasetBundle, metric: MetricSpec,
            batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """One metric's value (sharpness: the mean over its radii) and, for sharpness, the value per radius."""
    x, y = batch
    options = metric.options()
    if metric.kind == "sharpness":
        by_radius = sharpness(model, x, y, loss_fn_for(data.task), **options)
        return sum(by_radius.values()) / len(by_radius), {f"{r:g}": v for r, v in by_radius.items()}
    if metric.kind == "curvature_reference":
        return curvature_reference(model, x, y, **options), {}
    return curvature(model, x, y, **options), {}


@functools.lru_cache(maxsize=4)
def _case_data(spec: DatasetSpec, stop: EarlyStoppingSpec | None, data_root: str | None
               ) -> tuple[DatasetBundle, Holdout | None]:
    """The data a case's networks train on, and its early-stopping holdout (None with a fixed budget)."""
    data = _data(spec, data_root)
    return (data, None) if stop is None else split_holdout(data, stop)


def _train(case: StudyCase, seed: int, model: torch.nn.Sequential, data: DatasetBundle,
           holdout: Holdout | None) -> dict[str, Any]:
    """Train ``model`` for the case's budget or until early stopping; the record's fields it fills."""
    optimizer = make_optimizer(case.optimizer, model.parameters())
    stream = BatchStream(data.x_train, data.y_train, case.batch_size, seed=seed)
    loss_fn = loss_fn_for(data.task)
    if case.early_stopping is not None and holdout is not None:
        return train_early_stopping(model, optimizer, loss_fn, stream, holdout, data.task, case.early_stopping).fields()
    steps = budget_steps(case.budget_kind, case.budget_value, stream.steps_per_epoch)
    for _ in range(steps):
        x, y = stream.next()
        optimizer_step(model, optimizer, loss_fn, x, y)
    return {"steps": steps}


def train_network(case: StudyCase, seed: int, data_root: str | None = None) -> NetworkRecord:
    """Train ``case``'s network with ``seed`` (for its budget, or until early stopping restores its best
    weights), then measure every metric of the case on those weights."""
    data, holdout = _case_data(case.dataset, case.early_stopping, data_root)
    model = build_mlp(case.model, seed=seed)
    clock = Clock(DEVICE)
    with clock.span("train"):
        trained = _train(case, seed, model, data, holdout)
    n = min(TRAIN_EVAL_SIZE, len(data.x_train))
    train_loss, train_accuracy = evaluate(model, data.x_train[:n], data.y_train[:n], data.task)
    val_loss, val_accuracy = evaluate(model, data.x_val, data.y_val, data.task)
    record = NetworkRecord(case.name, seed, "ok", train_loss=train_loss, val_loss=val_loss, val_accuracy=val_accuracy,
                           train_seconds=clock.total("train"), train_accuracy=train_accuracy,
                           train_size=len(data.x_train), **trained)
    if case.early_stopping is not None and record.best_epoch is None:
        record.status, record.message = "diverged", "the holdout loss was never finite; no weights to restore"
        return record
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        record.status, record.message = "diverged", f"loss became {train_loss} (train) / {val_loss} (validation)"
        return record
    with clock.span("measure"):
        batch = measurement_batch(data, case.measure_batch)
        for metric in case.metrics:
            value, by_radius = measure(model, data, metric, batch)
            record.metrics[metric.label] = value
            if by_radius:
                record.sharpness_by_radius[metric.label] = by_radius
    record.measure_seconds = clock.total("measure")
    return record
