"""Pretraining: the pair's shared initial network is trained until a calibration holdout stops improving.

A case with `pretrain: {patience, max_epochs, holdout, every_epochs, lr}` (docs/suite-format.md#pretraining)
does not start its arms from a fresh initialisation: `PairRunner.run` first hands the template model to
`pretrain`, which trains it with the pair's optimizer (at `lr` when set, else the optimizer's own) on the
training split minus a holdout (`telebench.training.holdout`: seeded by the dataset, the same rows for every
seed and arm), checks the holdout loss before training and every `every_epochs` epochs (and at
`max_epochs`), stops once `patience` checks in a row brought no lower loss (or at `max_epochs`, or at a
non-finite loss), and restores the weights of the best check. Those weights are every arm's start, so the
arms of a seed still start identical; the pretraining optimizer and its state are dropped (each arm
builds its own, as without pretraining).

The arms then train on the same training split minus the holdout (`split_for_pretrain` replaces the
runner's data): the network they continue is the early-stopped one for exactly that data, the holdout
stays unseen by every gradient step of every arm, and the validation split, on which the verdicts are
measured, took no part in choosing the weights. Pretraining is not what a suite compares, so it runs off
every arm's clock (train, teleport and eval) and its wall time is recorded apart, in each trial's
`pretrain` record.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from telebench.config import registry
from telebench.experiments.pairs.spec import BudgetSpec, PretrainSpec, TrialSpec
from telebench.training.batches import BatchStream
from telebench.training.dataset_bundle import DatasetBundle
from telebench.training.evaluation import TaskLoss, evaluate
from telebench.training.holdout import carve_holdout, holdout_seed
from telebench.training.optimizers import make_optimizer
from telebench.training.specs import thaw
from telebench.training.step import optimizer_step, state_snapshot

SEED_OFFSET = 7_919  # pretraining's batch order differs from the arms' (seeded by spec.seed) after it

Holdout = tuple[Tensor, Tensor]


def split_for_pretrain(spec: TrialSpec, data: DatasetBundle) -> tuple[DatasetBundle, Holdout | None]:
    """(the data the pair trains on, the holdout): unchanged and None without `pretrain`."""
    if spec.pretrain is None:
        return data, None
    return carve_holdout(data, spec.pretrain.holdout, holdout_seed(spec.dataset))


def pretrain(model: nn.Module, spec: TrialSpec, data: DatasetBundle, holdout: Holdout | None,
             loss_fn: TaskLoss) -> dict[str, Any] | None:
    """Train `model` in place, early-stopped on `holdout`, and leave it at the best check's weights; the
    trial records' `pretrain` entry, or None when the spec has no `pretrain` (the model is then untouched)."""
    settings = spec.pretrain
    if settings is None or holdout is None:
        return None
    started = time.perf_counter()
    optimizer_spec = spec.optimizer if settings.lr is None else replace(spec.optimizer, lr=settings.lr)
    optimizer = make_optimizer(optimizer_spec, model.parameters())
    stream = BatchStream(data.x_train, data.y_train, spec.batch_size, seed=spec.seed + SEED_OFFSET)

    def check() -> float:
        return evaluate(model, holdout[0], holdout[1], data.task, spec.eval_batch_size)[0]

    losses = [check()]
    best, best_epoch, best_state = losses[0], 0, state_snapshot(model)
    epoch, since_best = 0, 0
    stopped = "diverged" if not math.isfinite(best) else "max_epochs"
    while stopped == "max_epochs" and epoch < settings.max_epochs:
        for _ in range(stream.steps_per_epoch):
            optimizer_step(model, optimizer, loss_fn, *stream.next())
        epoch += 1
        if epoch % settings.every_epochs and epoch < settings.max_epochs:
            continue
        losses.append(check())
        if not math.isfinite(losses[-1]):
            stopped = "diverged"
        elif losses[-1] < best:
            best, best_epoch, best_state, since_best = losses[-1], epoch, state_snapshot(model), 0
        else:
            since_best += 1
            if since_best >= settings.patience:
                stopped = "patience"
    model.load_state_dict(best_state)
    if data.x_train.device.type == "cuda":
        torch.cuda.synchronize(data.x_train.device)
    return {"epochs": epoch, "best_epoch": best_epoch, "best_holdout_loss": best, "stopped": stopped,
            "holdout_losses": losses, "holdout": settings.holdout, "lr": optimizer_spec.lr,
            "seconds": time.perf_counter() - started}


# ---- for `telebench list` ----------------------------------------------------------------------------
def _steps_per_epoch(spec: TrialSpec, settings: PretrainSpec) -> int:
    sizes = registry.dataset_sizes(spec.dataset.name, thaw(spec.dataset.params))
    n_train = sizes[0] if sizes else settings.holdout + spec.batch_size
    return max(1, (n_train - settings.holdout) // spec.batch_size)


def _as_trial(spec: TrialSpec, settings: PretrainSpec) -> TrialSpec:
    """Pretraining's longest run, max_epochs with a check every every_epochs, as a baseline trial to estimate
    (its checks are costed as full evaluations, so the figure is an upper bound)."""
    per_epoch = _steps_per_epoch(spec, settings)
    return replace(spec, arm_kind="baseline", teleport=None, pretrain=None,
                   budget=BudgetSpec("steps", float(settings.max_epochs * per_epoch)),
                   eval_every=settings.every_epochs * per_epoch)


def describe_pretraining(plan: Sequence[TrialSpec], *, probe: bool = True) -> str | None:
    """One line for `telebench list`: which cases pretrain, how, and at most how long; None when none does."""
    from telebench.experiments.pairs.estimate import estimate_plan

    firsts: dict[Any, TrialSpec] = {}
    for spec in plan:  # one pretraining per pair (a tuning stage's lrs are pairs of their own)
        if spec.pretrain is not None:
            firsts.setdefault((spec.pair_key, spec.optimizer, spec.role), spec)
    if not firsts:
        return None
    trials = [_as_trial(spec, spec.pretrain) for spec in firsts.values() if spec.pretrain is not None]
    seconds = estimate_plan(trials, probe=probe, startup_s=0.0).seconds
    pairs = Counter(spec.case for spec in firsts.values())
    cases = {spec.case: spec.pretrain for spec in firsts.values()}
    parts = []
    for case, p in cases.items():
        assert p is not None
        lr = "the optimizer's lr" if p.lr is None else f"lr {p.lr:g}"
        parts.append(f"{case} ({pairs[case]} pairs): holdout {p.holdout}, patience {p.patience} checks every "
                     f"{p.every_epochs} epoch(s), at most {p.max_epochs} epochs, {lr}")
    return (f"pretraining before the arms, off every clock and not in the time above, at most about "
            f"{seconds / 60:.0f} min: " + "; ".join(parts))
