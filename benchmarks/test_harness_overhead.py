"""Harness overhead: telebench's timed loop against a bare PyTorch loop doing the same steps.

Both train the same 784-16-10-10 LeakyReLU net with SGD on the same batches. The harness side is
a real baseline trial through PairRunner with evaluation only at the start and the end (those
run off the clock). The figure is `train_clock_s` (what telebench reports) and the wall time of
the harness's training against the bare loop's wall time; repeats are interleaved and the minimum
of each is kept, so background load on a shared machine hits both alike.

Run: python -m pytest benchmarks/test_harness_overhead.py --benchmark-json=harness.json -s
"""

from __future__ import annotations

import time

import pytest
import torch

from telebench.experiments.pairs.loop import PairRunner
from telebench.experiments.pairs.spec import BudgetSpec, TargetSpec, TrialSpec
from telebench.training.batches import BatchStream
from telebench.training.datasets import load_dataset
from telebench.training.evaluation import loss_fn_for
from telebench.training.models import build_mlp
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec, freeze

STEPS = 1500
BATCH = 20
REPEATS = 5


def _spec() -> TrialSpec:
    return TrialSpec(
        suite="bench",
        case="overhead",
        arm="baseline",
        arm_kind="baseline",
        dataset=DatasetSpec("synthetic-classification", freeze({"n_train": 5000, "n_val": 500, "n_features": 784})),
        model=ModelSpec((784, 16, 10, 10), "leaky_relu", 0.1, bias=False),
        optimizer=OptimizerSpec("sgd", 1e-2),
        optimizer_label="sgd",
        teleport=None,
        device="cpu",
        seed=0,
        batch_size=BATCH,
        budget=BudgetSpec("steps", STEPS),
        eval_every=STEPS,
        target=TargetSpec(),
    )


def _bare_loop(spec: TrialSpec, data) -> float:
    """The same work written plainly: the floor any harness is measured against."""
    model = build_mlp(spec.model, seed=spec.seed)
    opt = torch.optim.SGD(model.parameters(), lr=spec.optimizer.lr)
    stream = BatchStream(data.x_train, data.y_train, spec.batch_size, seed=spec.seed)
    loss_fn = loss_fn_for(data.task)
    start = time.perf_counter()
    for _ in range(STEPS):
        x, y = stream.next()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return time.perf_counter() - start


def _harness(spec: TrialSpec, data) -> tuple[float, float]:
    """(train_clock_s, wall seconds of the training part) of one real telebench trial."""
    runner = PairRunner([spec], data=data)
    start = time.perf_counter()
    (record,) = runner.run()
    wall = time.perf_counter() - start - record["eval_clock_s"]
    return record["train_clock_s"], wall


@pytest.mark.benchmark(group="harness")
def test_harness_overhead(benchmark) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # what `telebench run` uses by default
    spec = _spec()
    data = load_dataset(spec.dataset)
    bare, clock, wall = [], [], []
    for _ in range(REPEATS):  # interleaved, so drift hits both alike
        bare.append(_bare_loop(spec, data))
        c, w = _harness(spec, data)
        clock.append(c)
        wall.append(w)
    benchmark.pedantic(_harness, args=(spec, data), rounds=1, iterations=1)
    benchmark.extra_info.update(
        bare_s=min(bare),
        harness_train_clock_s=min(clock),
        harness_wall_s=min(wall),
        clock_overhead=min(clock) / min(bare) - 1,
        wall_overhead=min(wall) / min(bare) - 1,
        steps=STEPS,
    )
    print(
        f"\nbare {min(bare):.3f}s  harness train clock {min(clock):.3f}s ({min(clock) / min(bare) - 1:+.1%})"
        f"  harness wall excl. eval {min(wall):.3f}s ({min(wall) / min(bare) - 1:+.1%})"
    )
    assert min(clock) > 0 and min(bare) > 0
