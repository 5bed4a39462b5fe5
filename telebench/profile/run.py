"""Profile one subject from start to end: warm up, time, profile, measure memory, count, compile, sweep.

The order matters: the plain timings come first, on a warmed-up workload and with no profiler
attached, so the headline numbers carry no profiling overhead; the profiled teleports come next, and
their time against the plain time is the profiler's own overhead.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from telebench.profile.breakdown import Breakdown, profile_teleports
from telebench.profile.compiled import CompileRow, measure_compiled
from telebench.profile.counts import WorkCounts, count_work
from telebench.profile.memory import MemoryReport, measure_memory
from telebench.profile.plot import plot_sweep
from telebench.profile.subject import ProfileSubject
from telebench.profile.sweep import Sweep, SweepResult, run_sweep
from telebench.profile.timing import NOISE_RATIO, Samples, Timings, measure, spread_of
from telebench.profile.workload import Workload, load_data
from telebench.training.heap import paused

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ProfileOptions:
    warmup: int = 2  # untimed rounds of teleport, gradient and training step before measuring
    repeat: int = 5  # measured teleports (and samples of the other two operations)
    profiler: bool = True  # False: plain timings only, no phase breakdown and no trace (--no-trace)
    compile: bool = False
    compile_backend: str = "inductor"
    sweeps: tuple[Sweep, ...] = ()
    top: int = 15  # operators listed per table
    data_root: str | None = None


@dataclass
class CaseProfile:
    """Everything measured for one subject. Times are seconds per call."""

    subject: ProfileSubject
    timings: Timings
    record: dict[str, Any]  # the last plain teleport's TeleportRecord, as numbers
    memory: MemoryReport
    breakdown: Breakdown | None = None
    work: WorkCounts | None = None  # operator calls and matrix-product flops against a gradient's
    compiled: list[CompileRow] = field(default_factory=list)
    sweeps: list[SweepResult] = field(default_factory=list)
    trace: str | None = None  # file name of the Chrome trace, relative to the report

    @property
    def profiled_teleport_s(self) -> float | None:
        """Median wall time of a teleport under the profiler."""
        return statistics.median(self.breakdown.per_teleport_s) if self.breakdown else None

    def noisy(self) -> dict[str, float]:
        """Timing → median/fastest, for each one noisier than NOISE_RATIO (the profiled teleports too)."""
        found = self.timings.noisy()
        if self.breakdown is not None and spread_of(self.breakdown.per_teleport_s) > NOISE_RATIO:
            found["teleport under the profiler"] = spread_of(self.breakdown.per_teleport_s)
        return found

    @property
    def profiler_overhead(self) -> float | None:
        """Median teleport time under the profiler over the median plain time (1.0 = no overhead)."""
        profiled = self.profiled_teleport_s
        return None if profiled is None else profiled / self.timings.teleport.median

    def figures(self) -> dict[str, Any]:
        """The headline numbers, flat, for profile.json (and a later `compare`)."""
        t = self.timings
        return {
            "teleport_s": _stats(t.teleport),
            "gradient_s": _stats(t.gradient),
            "train_step_s": _stats(t.train_step),
            "grad_evals": {"median": t.grad_evals("median"), "min": t.grad_evals("min")},
            "break_even_steps": {"median": t.break_even("median"), "min": t.break_even("min")},
            "profiled_teleport_s": self.profiled_teleport_s,
            "profiler_overhead": self.profiler_overhead,
            "phase_coverage": self.breakdown.coverage if self.breakdown else None,
            "call_ratio": self.work.call_ratio if self.work else None,  # operator calls: teleport / gradient
            "flop_ratio": self.work.flop_ratio if self.work else None,  # matrix-product flops: teleport / gradient
            "noisy": self.noisy(),  # timing → median/fastest where over NOISE_RATIO: a busy machine
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.subject.name,
            "description": self.subject.description,
            "subject": asdict(self.subject),
            "figures": self.figures(),
            "timings": asdict(self.timings),
            "teleport_record": self.record,
            "phases": asdict(self.breakdown) if self.breakdown else None,
            "memory": asdict(self.memory),
            "work": asdict(self.work) if self.work else None,
            "compile": [asdict(r) | {"speedup": r.speedup} for r in self.compiled],
            "sweeps": [asdict(s) for s in self.sweeps],
            "trace": self.trace,
        }


def _stats(samples: Samples) -> dict[str, Any]:
    return {
        "median": samples.median,
        "min": samples.min,
        "samples": len(samples.seconds),
        "calls": samples.calls,
    }


def profile_subject(
    subject: ProfileSubject,
    options: ProfileOptions,
    out_dir: Path,
    subdir: str = "",
    progress: Progress | None = None,
) -> CaseProfile:
    """Measure ``subject``; writes the trace and sweep plots into ``out_dir / subdir`` and records their
    names relative to ``out_dir``."""
    say = progress or (lambda _: None)

    def name(file: str) -> str:
        return f"{subdir}/{file}" if subdir else file

    say("loading data")
    data = load_data(subject, options.data_root)
    workload = Workload.build(subject, data)
    say("warming up")
    with paused(freeze=True):  # then no full collection of the start-up heap lands on a timed round
        workload.warm_up(options.warmup)
    say("timing teleports, gradient evaluations and training steps")
    timings = measure(workload, options.repeat)
    assert workload.last_record is not None
    record = workload.last_record.to_dict()
    breakdown, trace = None, None
    if options.profiler:
        say("profiling teleports")
        trace = name("trace.json")
        breakdown = profile_teleports(workload, options.repeat, out_dir / trace, options.top)
    say("measuring memory")
    memory = measure_memory(workload, per_phase=options.profiler)
    say("counting operator calls and matrix-product flops")
    work = count_work(workload.teleport, workload.gradient, workload.restore)
    compiled = []
    if options.compile:
        say(f"compiling with torch.compile (backend {options.compile_backend})")
        compiled = measure_compiled(workload, options.compile_backend, options.repeat)
    sweeps = []
    for sweep in options.sweeps:
        say(f"sweeping {sweep.spec}")
        result = run_sweep(subject, sweep, options.warmup, options.repeat, data)
        result.plot = name(f"sweep-{sweep.axis}.png")
        plot_sweep(result, out_dir / result.plot, f"{subject.name}: {sweep.axis} sweep")
        sweeps.append(result)
    return CaseProfile(subject, timings, record, memory, breakdown, work, compiled, sweeps, trace)
