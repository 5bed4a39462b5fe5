"""Plain timings, without the profiler: a teleport, a gradient evaluation and a training step, interleaved.

Each sample synchronises the device, reads the host clock, runs the operation (a block of back-to-back
calls for the short ones, so a sample is long enough to time), then synchronises and reads the clock
again. On CUDA the device span is measured with CUDA events (the same timers as the training clock);
the host span is kept beside it. The three operations take turns, sample by sample, so drift on a
shared machine hits all three alike. The fastest sample is the least disturbed by other processes and
the median says what is typical; both are kept.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from telebench.profile.workload import Workload, synchronize
from telebench.training.clock import CudaEventTimer, HostTimer, Timer

BLOCK_SECONDS = 0.02  # a gradient or training-step sample runs back-to-back calls for about this long
MAX_CALLS = 1000
# A timing whose median sample is over this many times its fastest was disturbed (a busy machine):
# its ratios (gradient evaluations, break-even) may be off by as much, so the report says so.
NOISE_RATIO = 2.0


@dataclass
class Samples:
    """Seconds per call of one operation, one entry per sample (CUDA events on CUDA, host clock on CPU)."""

    seconds: list[float] = field(default_factory=list)
    host_seconds: list[float] = field(default_factory=list)  # host clock, after a synchronise, per call
    calls: int = 1  # back-to-back calls per sample

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """Median over fastest sample: 1.0 on a quiet machine; above NOISE_RATIO the timing is noisy."""
        return spread_of(self.seconds)


def spread_of(seconds: Sequence[float]) -> float:
    """Median over fastest of some samples (1.0 for fewer than two, or a fastest of zero)."""
    fastest = min(seconds, default=0.0)
    return statistics.median(seconds) / fastest if len(seconds) > 1 and fastest > 0 else 1.0


class Stopwatch:
    """Times a block of calls on one device: synchronise, clock, run, clock, synchronise."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.timer: Timer = CudaEventTimer(device) if device.type == "cuda" else HostTimer()

    def sample(self, fn: Callable[[], object], calls: int = 1) -> tuple[float, float]:
        """(device seconds, host seconds) per call, averaged over ``calls`` back-to-back calls."""
        synchronize(self.device)
        host_start = time.perf_counter()
        start = self.timer.mark()
        for _ in range(calls):
            fn()
        end = self.timer.mark()
        synchronize(self.device)
        host = time.perf_counter() - host_start
        elapsed = self.timer.elapsed(start, end)
        self.timer.release(start)
        self.timer.release(end)
        return elapsed / calls, host / calls

    def record(self, samples: Samples, fn: Callable[[], object]) -> None:
        device_s, host_s = self.sample(fn, samples.calls)
        samples.seconds.append(device_s)
        samples.host_seconds.append(host_s)

    def calls_for(self, fn: Callable[[], object]) -> int:
        """How many back-to-back calls make a sample of about BLOCK_SECONDS."""
        one, _ = self.sample(fn)
        return max(1, min(MAX_CALLS, math.ceil(BLOCK_SECONDS / max(one, 1e-9))))


@dataclass
class Timings:
    """Seconds per call of the three operations, measured in one run."""

    teleport: Samples
    gradient: Samples
    train_step: Samples

    def grad_evals(self, stat: str = "median") -> float:
        """One teleport in gradient evaluations: teleport time / forward+backward time on the same batch."""
        return getattr(self.teleport, stat) / getattr(self.gradient, stat)

    def break_even(self, stat: str = "median") -> float:
        """Training steps a teleport costs: the steps it must save to pay for itself."""
        return getattr(self.teleport, stat) / getattr(self.train_step, stat)

    def noisy(self) -> dict[str, float]:
        """Operation → median/fastest, for each operation whose spread is over NOISE_RATIO."""
        named = {"teleport": self.teleport, "gradient evaluation": self.gradient, "training step": self.train_step}
        return {name: s.spread for name, s in named.items() if s.spread > NOISE_RATIO}


def measure(workload: Workload, repeat: int) -> Timings:
    """``repeat`` samples of each operation, interleaved (the caller warms up first).

    Teleports are timed one per sample, each from the same starting weights (restored untimed).
    """
    watch = Stopwatch(workload.device)
    timings = Timings(
        teleport=Samples(),
        gradient=Samples(calls=watch.calls_for(workload.gradient)),
        train_step=Samples(calls=watch.calls_for(workload.train_step)),
    )
    for _ in range(repeat):
        workload.restore()
        watch.record(timings.teleport, workload.teleport)
        watch.record(timings.gradient, workload.gradient)
        watch.record(timings.train_step, workload.train_step)
    workload.restore()
    return timings
