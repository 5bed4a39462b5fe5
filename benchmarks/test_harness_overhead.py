"""Harness overhead: telebench's timed loop against a bare PyTorch loop doing the same steps.

Both train the same 784-16-10-10 LeakyReLU net with SGD on the same batches, after the same few
untimed warm-up steps. The harness side is a real baseline trial through PairRunner with evaluation
only at the start and the end (those run off the clock). The figures are `train_clock_s` (what
telebench reports) and the wall time of the harness's training (its set-up included, evaluation not)
against the bare loop's wall time. Repeats are interleaved, their order alternating, so background load
on a shared machine hits both alike; each ratio is given as min(harness) / min(bare) and as the median
over repeats of harness / bare within one repeat. On a loaded machine wall time swings by more than the
few per cent measured here, so the same comparison is also made in thread CPU time: the bare loop's, and
the harness's training clock with its timer reading time.thread_time (the same spans, the same work;
time other processes take from this thread counts on neither side). test_step_path_overhead isolates the
per-step path (the loop's stepping against bare steps) in many short interleaved blocks, the figure that
stays put on a machine whose load swings.

Run: python -m pytest benchmarks/test_harness_overhead.py --benchmark-json=harness.json -s
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from telebench.experiments.pairs import loop
from telebench.experiments.pairs.loop import WARMUP_STEPS, PairRunner
from telebench.experiments.pairs.spec import BudgetSpec, TargetSpec, TrialSpec
from telebench.training.batches import BatchStream
from telebench.training.clock import Clock, HostTimer
from telebench.training.datasets import load_dataset
from telebench.training.evaluation import loss_fn_for
from telebench.training.models import build_mlp
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec, freeze

STEPS = 1500
BATCH = 20
REPEATS = 9


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


class ThreadTimer(HostTimer):
    """The host timer on this thread's CPU time instead of the wall clock."""

    def mark(self) -> float:
        return time.thread_time()


def _bare_loop(spec: TrialSpec, data) -> tuple[float, float]:
    """The same work written plainly, the floor any harness is measured against: (wall, thread CPU) seconds."""
    model = build_mlp(spec.model, seed=spec.seed)
    opt = torch.optim.SGD(model.parameters(), lr=spec.optimizer.lr)
    stream = BatchStream(data.x_train, data.y_train, spec.batch_size, seed=spec.seed)
    loss_fn = loss_fn_for(data.task)
    warm = build_mlp(spec.model, seed=spec.seed)  # what PairRunner._warm_up does, on its own copy
    warm_opt = torch.optim.SGD(warm.parameters(), lr=spec.optimizer.lr)
    warm_stream = BatchStream(data.x_train, data.y_train, spec.batch_size, seed=spec.seed + 1)
    for _ in range(WARMUP_STEPS):
        x, y = warm_stream.next()
        warm_opt.zero_grad(set_to_none=True)
        loss_fn(warm(x), y).backward()
        warm_opt.step()
    start, cpu = time.perf_counter(), time.thread_time()
    for _ in range(STEPS):
        x, y = stream.next()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return time.perf_counter() - start, time.thread_time() - cpu


def _harness(spec: TrialSpec, data) -> tuple[float, float]:
    """(train_clock_s, wall seconds of the training part) of one real telebench trial."""
    runner = PairRunner([spec], data=data)
    start = time.perf_counter()
    (record,) = runner.run()
    wall = time.perf_counter() - start - record["eval_clock_s"]
    return record["train_clock_s"], wall


def _harness_cpu(spec: TrialSpec, data, monkeypatch: pytest.MonkeyPatch) -> float:
    """The same trial's train_clock_s with the clock on thread CPU time."""
    with monkeypatch.context() as patch:
        patch.setattr(loop, "Clock", lambda device: Clock(device, timer=ThreadTimer()))
        return PairRunner([spec], data=data).run()[0]["train_clock_s"]


def _overheads(harness: list[float], bare: list[float]) -> tuple[float, float]:
    """(min(harness) / min(bare) - 1, the median over repeats of harness / bare - 1)."""
    pairs = statistics.median(h / b for h, b in zip(harness, bare, strict=True))
    return min(harness) / min(bare) - 1, pairs - 1


@pytest.mark.benchmark(group="harness")
def test_harness_overhead(benchmark, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # what `telebench run` uses by default
    spec = _spec()
    data = load_dataset(spec.dataset)
    bare, bare_cpu, clock, wall, clock_cpu = [], [], [], [], []
    for i in range(REPEATS):  # interleaved, the order alternating, so drift hits both alike
        runs = [lambda: _bare_loop(spec, data), lambda: _harness(spec, data),
                lambda: _harness_cpu(spec, data, monkeypatch)]
        results = {j: runs[j]() for j in (range(3) if i % 2 == 0 else reversed(range(3)))}
        (b, b_cpu), (c, w), c_cpu = results[0], results[1], results[2]
        bare.append(b)
        bare_cpu.append(b_cpu)
        clock.append(c)
        wall.append(w)
        clock_cpu.append(c_cpu)
    benchmark.pedantic(_harness, args=(spec, data), rounds=1, iterations=1)
    figures = {"clock": _overheads(clock, bare), "wall": _overheads(wall, bare),
               "cpu_clock": _overheads(clock_cpu, bare_cpu)}
    benchmark.extra_info.update(
        bare_s=min(bare),
        bare_cpu_s=min(bare_cpu),
        harness_train_clock_s=min(clock),
        harness_wall_s=min(wall),
        harness_cpu_train_clock_s=min(clock_cpu),
        bare_step_us=min(bare) / STEPS * 1e6,
        harness_step_us=min(clock) / STEPS * 1e6,
        steps=STEPS,
        repeats=REPEATS,
        **{f"{name}_overhead": of_minima for name, (of_minima, _) in figures.items()},
        **{f"{name}_overhead_median_pair": pairs for name, (_, pairs) in figures.items()},
    )
    print(f"\nbare {min(bare) / STEPS * 1e6:.0f} µs/step ({min(bare_cpu) / STEPS * 1e6:.0f} µs CPU); harness over bare,"
          " of minima / median of pairs:")
    for name, label in (("clock", "train clock, wall"), ("wall", "training wall incl. set-up, excl. eval"),
                        ("cpu_clock", "train clock, thread CPU")):
        of_minima, pairs = figures[name]
        print(f"  {label:40s} {of_minima:+.1%} / {pairs:+.1%}")
    assert min(clock) > 0 and min(bare) > 0 and min(clock_cpu) > 0


BLOCK_STEPS = 50
BLOCKS = 300


@pytest.mark.benchmark(group="harness")
def test_step_path_overhead(benchmark) -> None:
    """The per-step path alone, in a form that holds on a loaded machine: one process alternates short
    blocks of bare steps and of the loop's own stepping (PairRunner._train_until on a real arm, its train
    clock running), each block timed in thread CPU time; the figure is the median over blocks of
    harness / bare, taken pair by pair, so load that comes and goes hits both sides of a pair alike."""
    torch.set_num_threads(1)
    spec = _spec()
    data = load_dataset(spec.dataset)
    runner = PairRunner([spec], data=data)
    init = {k: v.detach().clone() for k, v in build_mlp(spec.model, seed=spec.seed).state_dict().items()}
    arm = runner._new_arm(spec, init)
    model = build_mlp(spec.model, seed=spec.seed)
    opt = torch.optim.SGD(model.parameters(), lr=spec.optimizer.lr)
    stream = BatchStream(data.x_train, data.y_train, spec.batch_size, seed=spec.seed)
    loss_fn = loss_fn_for(data.task)

    def bare_block() -> float:
        start = time.thread_time()
        for _ in range(BLOCK_STEPS):
            x, y = stream.next()
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
        return time.thread_time() - start

    def harness_block() -> float:
        start = time.thread_time()
        runner._train_until(arm, arm.step + BLOCK_STEPS)
        return time.thread_time() - start

    for _ in range(3):  # warm both
        bare_block()
        harness_block()
    bare, harness = [], []
    for i in range(BLOCKS):
        if i % 2:
            bare.append(bare_block())
            harness.append(harness_block())
        else:
            harness.append(harness_block())
            bare.append(bare_block())
    benchmark.pedantic(harness_block, rounds=1, iterations=1)
    of_minima, pairs = _overheads(harness, bare)
    benchmark.extra_info.update(bare_step_us=min(bare) / BLOCK_STEPS * 1e6,
                                harness_step_us=min(harness) / BLOCK_STEPS * 1e6,
                                step_overhead=of_minima, step_overhead_median_pair=pairs,
                                blocks=BLOCKS, block_steps=BLOCK_STEPS)
    print(f"\nstep path, thread CPU: bare {min(bare) / BLOCK_STEPS * 1e6:.0f} µs/step, harness "
          f"{min(harness) / BLOCK_STEPS * 1e6:.0f} µs/step: {pairs:+.1%} median of {BLOCKS} block pairs "
          f"({of_minima:+.1%} of minima)")
    assert arm.step >= BLOCKS * BLOCK_STEPS and arm.clock.total("train") > 0
