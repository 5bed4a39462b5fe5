"""How long a correlation study takes, for `telebench list`: a short probe on stand-in data, scaled up.

Per case, on random tensors of the dataset's shape (no file is read) and one torch thread, timed by
the process's CPU clock (so a busy machine does not inflate it): a few hundred training steps of the
case's network, optimizer and batch, one holdout check and one final evaluation, and each metric once
on the measurement batch. A network then costs

    steps × step + checks × holdout check + final evaluation + measurement

where early stopping's steps and checks are those of `max_epochs`, an upper bound: a network that
stops at half of it trains for about half. Loading the data and starting the workers are not counted.
The figure is for one core; `--jobs N` on N free cores divides it by about N.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from telebench.config import registry
from telebench.experiments.correlation.schema import StudyCase
from telebench.training.evaluation import TRAIN_EVAL_SIZE
from telebench.training.specs import thaw

PROBE_STEPS = 200
UNKNOWN_SIZES = (1_000, 250)


@dataclass(frozen=True)
class CaseEstimate:
    """One case's probed costs and what a network of it takes (at most, with early stopping)."""

    step_s: float
    epoch_s: float  # the steps of one epoch, with the holdout checks that fall in it
    measure_s: float
    network_s: float  # one network: at most, with early stopping
    total_s: float  # every network of the case, one after another


def _cpu_seconds(work: Callable[[], object], repeat: int = 1) -> float:
    start = time.process_time()
    for _ in range(repeat):
        work()
    return (time.process_time() - start) / repeat


def _sizes(case: StudyCase) -> tuple[int, int]:
    sizes = registry.dataset_sizes(case.dataset.name, thaw(case.dataset.params))
    n_train, n_val = (sizes[0], sizes[1]) if sizes else UNKNOWN_SIZES
    return n_train - (case.early_stopping.holdout if case.early_stopping else 0), max(n_val, 1)


def estimate_case(case: StudyCase) -> CaseEstimate | None:
    """Probe one case (a second or two) and scale it to its networks; None when the probe fails."""
    try:
        return _probe(case)
    except Exception:  # noqa: BLE001 - an estimate is a courtesy; `run` reports the real error
        return None


def _probe(case: StudyCase) -> CaseEstimate:
    from telebench.experiments.correlation.train import measure
    from telebench.training.dataset_bundle import CLASSIFICATION, DatasetBundle
    from telebench.training.evaluation import evaluate, loss_fn_for
    from telebench.training.models import build_mlp
    from telebench.training.optimizers import make_optimizer
    from telebench.training.step import budget_steps, optimizer_step

    n_fit, n_val = _sizes(case)
    widths = case.model.widths
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(max(n_fit, case.measure_batch, case.batch_size), widths[0], generator=generator)
    y = torch.randint(0, widths[-1], (len(x),), generator=generator)
    data = DatasetBundle("stand-in", CLASSIFICATION, x, y, x[:n_val], y[:n_val], None, None, widths[0], widths[-1])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_mlp(case.model, seed=0)
        optimizer = make_optimizer(case.optimizer, model.parameters())
        loss_fn = loss_fn_for(CLASSIFICATION)
        xb, yb = x[: case.batch_size], y[: case.batch_size]
        optimizer_step(model, optimizer, loss_fn, xb, yb)  # warm-up
        step_s = _cpu_seconds(lambda: optimizer_step(model, optimizer, loss_fn, xb, yb), PROBE_STEPS)
        stop = case.early_stopping
        check_s = 0.0 if stop is None else _cpu_seconds(lambda: evaluate(model, x[: stop.holdout], y[: stop.holdout],
                                                                         CLASSIFICATION))
        final_s = _cpu_seconds(lambda: (evaluate(model, x[:TRAIN_EVAL_SIZE], y[:TRAIN_EVAL_SIZE], CLASSIFICATION),
                                        evaluate(model, x[:n_val], y[:n_val], CLASSIFICATION)))
        batch = x[: case.measure_batch], y[: case.measure_batch]
        measure_s = 0.0
        for metric in case.metrics:
            start = time.process_time()
            measure(model, data, metric, batch)
            measure_s += time.process_time() - start
    finally:
        torch.set_num_threads(before)
    per_epoch = max(n_fit // case.batch_size, 1)
    if stop is None:
        steps, checks, epoch_s = budget_steps(case.budget_kind, case.budget_value, per_epoch), 0, per_epoch * step_s
    else:
        steps, checks = stop.max_epochs * per_epoch, math.ceil(stop.max_epochs / stop.every_epochs)
        epoch_s = per_epoch * step_s + check_s / stop.every_epochs
    network_s = steps * step_s + checks * check_s + final_s + measure_s
    return CaseEstimate(step_s, epoch_s, measure_s, network_s, network_s * case.networks)
