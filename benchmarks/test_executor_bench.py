"""Executor throughput: an 8-trial untimed suite on `local` against `process --jobs 2`, and Ray's
per-task and per-pair overhead. Measurements, not pass/fail tests:

    pytest benchmarks/test_executor_bench.py --benchmark-json=executors.json
    python benchmarks/test_executor_bench.py        # prints the ratio and the Ray overheads

The suite is untimed (`timed=False`), so the pool may run two pairs side by side on the one CPU;
a timed suite on one device would run its pairs one at a time by design.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from telebench.execution.local import LocalExecutor
from telebench.execution.process import ProcessExecutor
from telebench.experiments.pairs.plan import group_pairs
from telebench.experiments.pairs.spec import BudgetSpec, TargetSpec, TeleportSpec, TrialSpec
from telebench.experiments.pairs.task import run_pair
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec

STEPS = 8000  # about 2 s per trial on one core of this machine


def suite(steps: int = STEPS, seeds: int = 4) -> list[list[TrialSpec]]:
    """8 trials: 4 seeds x (baseline, reset-only), a 64-128-128-10 ReLU MLP on digits."""
    plan = [
        TrialSpec(
            suite="bench",
            case="digits",
            arm=arm,
            arm_kind=arm,
            dataset=DatasetSpec("digits"),
            model=ModelSpec((64, 128, 128, 10), "relu"),
            optimizer=OptimizerSpec("sgd", 0.05),
            optimizer_label="sgd",
            teleport=None if arm == "baseline" else TeleportSpec(),
            device="cpu",
            seed=seed,
            batch_size=64,
            budget=BudgetSpec("steps", steps),
            eval_every=max(1, steps // 5),
            target=TargetSpec(),
        )
        for seed in range(seeds)
        for arm in ("baseline", "reset-only")
    ]
    return group_pairs(plan)


def wall(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def run_local(threads: int | None = None) -> list[dict[str, Any]]:
    """Today's behaviour: torch's default thread count (every core), unless `threads` is given."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    records: list[dict[str, Any]] = []
    try:
        LocalExecutor(run_pair).run(suite(), records.append, None)
    finally:
        torch.set_num_threads(before)
    return records


def run_process() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    ProcessExecutor(run_pair, jobs=2, timed=False).run(suite(), records.append, None)
    return records


def ray_overheads(n_tasks: int = 200, n_pairs: int = 8) -> dict[str, float]:
    """Round trip of a no-op task (one at a time and pipelined), and the executor's cost per pair:
    driver wall time minus the time the pairs spent inside their workers, over pairs run one by one."""
    import ray

    from telebench.execution.ray_executor import RayExecutor

    started_here = not ray.is_initialized()
    t0 = time.perf_counter()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    init_s = time.perf_counter() - t0

    @ray.remote
    def noop() -> None:
        return None

    ray.get([noop.remote() for _ in range(10)])  # start the workers
    t0 = time.perf_counter()
    for _ in range(n_tasks):
        ray.get(noop.remote())
    latency = (time.perf_counter() - t0) / n_tasks
    t0 = time.perf_counter()
    ray.get([noop.remote() for _ in range(n_tasks)])
    pipelined = (time.perf_counter() - t0) / n_tasks

    records: list[dict[str, Any]] = []
    pairs = suite(steps=30, seeds=n_pairs)
    RayExecutor(run_pair, threads=1).run(pairs[:1], records.append, None)  # warm the worker's imports
    records.clear()
    driver_s = wall(lambda: RayExecutor(run_pair, threads=1).run(pairs, records.append, None))
    inside = {(r["timing"]["pair_started_unix"], r["timing"]["pair_finished_unix"]) for r in records}
    in_pairs_s = sum(end - start for start, end in inside)
    if started_here:
        ray.shutdown()
    return {
        "ray_init_s": init_s,
        "noop_task_latency_ms": latency * 1e3,
        "noop_task_pipelined_ms": pipelined * 1e3,
        "executor_overhead_per_pair_ms": (driver_s - in_pairs_s) / len(pairs) * 1e3,
    }


@pytest.mark.benchmark(group="executors-8-trials")
def test_local_8_trials(benchmark) -> None:
    records = benchmark.pedantic(run_local, rounds=1, iterations=1)
    assert [r["status"] for r in records] == ["ok"] * 8


@pytest.mark.benchmark(group="executors-8-trials")
def test_local_one_thread_8_trials(benchmark) -> None:
    records = benchmark.pedantic(run_local, args=(1,), rounds=1, iterations=1)
    assert [r["status"] for r in records] == ["ok"] * 8


@pytest.mark.benchmark(group="executors-8-trials")
def test_process_jobs2_8_trials(benchmark) -> None:
    records = benchmark.pedantic(run_process, rounds=1, iterations=1)
    assert [r["status"] for r in records] == ["ok"] * 8
    assert len({r["worker"] for r in records}) == 2


@pytest.mark.benchmark(group="ray-overhead")
def test_ray_overhead(benchmark) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'telebench[ray]')")
    figures = benchmark.pedantic(ray_overheads, rounds=1, iterations=1)
    benchmark.extra_info.update(figures)


if __name__ == "__main__":
    local_s = wall(run_local)
    local_1t_s = wall(lambda: run_local(1))
    process_s = wall(run_process)
    print(f"8-trial untimed suite: local ({torch.get_num_threads()} threads) {local_s:.1f} s, "
          f"local (1 thread) {local_1t_s:.1f} s, process --jobs 2 {process_s:.1f} s; speed-up "
          f"{local_s / process_s:.2f}x over local, {local_1t_s / process_s:.2f}x over local on 1 thread")
    for key, value in ray_overheads().items():
        print(f"{key}: {value:.2f}")
