"""Where a teleport's time goes: its phases and its operators, from ``torch.profiler``.

Each measured teleport runs inside a ``record_function("teleport")`` range, and the symmetry core
labels its phases (:mod:`telebench.symmetry.phases`). Time is attributed by the innermost labelled
range that is open at each instant:

* a phase's **time** is the wall time of its ranges minus the time of phase ranges nested inside them,
  so no instant counts twice (the core's phases do not nest today; when they don't, these are exactly
  the totals ``key_averages()`` shows for the labels);
* **unattributed** is the time inside "teleport" that no phase covers: the teleport's own set-up
  (reading the model, building the problem) and its record; phases + unattributed = the teleport;
* **coverage** is the share of a teleport inside phases, the median over the profiled teleports, so
  one teleport preempted by the OS during its set-up does not decide it;
* an **operator**'s self time counts towards the innermost range open when it started, on any thread
  (on CUDA the autograd engine runs backward passes on its own thread); its device time is the time
  of the kernels it launched.

On CUDA, host time inside a phase is launch time plus any wait at a synchronisation, so the device
column is the phase's real GPU cost.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from telebench.profile.quiet import quiet_profiler
from telebench.profile.workload import Workload
from telebench.symmetry import phases

TELEPORT = "teleport"  # the range around each measured teleport
UNATTRIBUTED = "unattributed"
LABELS = (TELEPORT, *phases.ALL)


@dataclass
class PhaseRow:
    """One phase, per teleport: how often it ran, its time and its share of the teleport."""

    label: str
    calls: float
    cpu_s: float
    cpu_share: float
    device_s: float
    device_share: float | None  # None on CPU


@dataclass
class OpRow:
    """One operator inside the teleports, per teleport."""

    name: str
    calls: float
    self_cpu_s: float
    self_device_s: float


@dataclass
class Breakdown:
    """The phase table and operator tables of ``teleports`` profiled teleports (figures per teleport)."""

    teleports: int
    teleport_s: float  # mean wall time of the "teleport" range under the profiler
    teleport_device_s: float  # kernel time inside it (0 on CPU)
    coverage: float  # share of a teleport's time inside labelled phases: the median over the teleports
    phases: list[PhaseRow]  # every phase of phases.ALL that ran, then the unattributed rest
    ops_by_cpu: list[OpRow]
    ops_by_device: list[OpRow]  # empty on CPU
    per_teleport_s: list[float]


@dataclass(frozen=True)
class _Range:
    label: str
    start: float  # µs, the profiler's clock
    end: float


def profile_teleports(workload: Workload, repeat: int, trace: Path | None = None, top: int = 15) -> Breakdown:
    """Profile ``repeat`` teleports (after one profiler warm-up teleport) and break them down.

    The caller warms up the workload first; ``trace`` receives the Chrome trace of the measured ones.
    """
    activities = [ProfilerActivity.CPU]
    if workload.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    plan = schedule(wait=0, warmup=1, active=repeat, repeat=1)
    with quiet_profiler(), profile(activities=activities, schedule=plan, acc_events=True) as prof:
        for _ in range(repeat + 1):
            workload.restore()
            with record_function(TELEPORT):
                workload.teleport()
            workload.synchronize()
            prof.step()
    workload.restore()
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
    return summarize(prof.events(), on_device=workload.device.type == "cuda", top=top)


def summarize(events: Iterable, on_device: bool, top: int = 15) -> Breakdown:
    """The breakdown of a profiler's ``events()`` (``FunctionEvent``s) holding "teleport" ranges."""
    host = [e for e in events if e.device_type == DeviceType.CPU]
    ranges = sorted(
        (_Range(e.name, e.time_range.start, e.time_range.end) for e in host if e.name in LABELS),
        key=lambda r: (r.start, -r.end),
    )
    teleports = [r for r in ranges if r.label == TELEPORT]
    if not teleports:
        raise ValueError(
            "no 'teleport' range among the profiler's events; wrap each teleport in record_function"
        )
    times, owners = _segments(ranges)
    exclusive, covered = _exclusive_times(times, owners, [r.start for r in teleports])
    device_by_label, ops = _operators(host, times, owners)

    n = len(teleports)
    durations = [r.end - r.start for r in teleports]
    total = sum(durations)
    total_device = sum(device_by_label.values())
    rows = _phase_rows(ranges, exclusive, device_by_label, total, total_device, n, on_device)
    per_op = [
        OpRow(o.name, o.calls / n, o.self_cpu_s / n / 1e6, o.self_device_s / n / 1e6) for o in ops.values()
    ]
    return Breakdown(
        teleports=n,
        teleport_s=total / n / 1e6,
        teleport_device_s=total_device / n / 1e6,
        coverage=statistics.median(c / d for c, d in zip(covered, durations, strict=True)),
        phases=rows,
        ops_by_cpu=sorted(per_op, key=lambda o: -o.self_cpu_s)[:top],
        ops_by_device=sorted(per_op, key=lambda o: -o.self_device_s)[:top] if on_device else [],
        per_teleport_s=[d / 1e6 for d in durations],
    )


def _exclusive_times(
    times: Sequence[float], owners: Sequence[str | None], starts: Sequence[float]
) -> tuple[defaultdict[str, float], list[float]]:
    """Each label's time with nested labelled time taken out (µs), and per teleport (by its start)
    the time inside phases: walking the cut timeline counts every instant exactly once."""
    exclusive: defaultdict[str, float] = defaultdict(float)
    covered = [0.0] * len(starts)  # per teleport, the time inside phases
    for i in range(len(times) - 1):
        owner, span = owners[i], times[i + 1] - times[i]
        if owner is not None:
            exclusive[owner] += span
            if owner != TELEPORT:
                covered[bisect.bisect_right(starts, times[i]) - 1] += span
    return exclusive, covered


def _operators(
    host: Sequence, times: Sequence[float], owners: Sequence[str | None]
) -> tuple[defaultdict[str, float], dict[str, OpRow]]:
    """Kernel time per innermost label, and per operator its totals (µs), for operators that started
    inside a labelled range: the teleport's work, not the profiler's or the loop's."""
    device_by_label: defaultdict[str, float] = defaultdict(float)
    ops: dict[str, OpRow] = {}
    for e in host:
        if e.name in LABELS or e.is_user_annotation:
            continue
        owner = owners[bisect.bisect_right(times, e.time_range.start) - 1] if times else None
        if owner is None:
            continue
        device_by_label[owner] += e.self_device_time_total
        row = ops.setdefault(e.name, OpRow(e.name, 0, 0.0, 0.0))
        row.calls += 1
        row.self_cpu_s += e.self_cpu_time_total
        row.self_device_s += e.self_device_time_total
    return device_by_label, ops


def _phase_rows(
    ranges: Sequence[_Range],
    exclusive: defaultdict[str, float],  # a label that never ran reads 0
    device_by_label: defaultdict[str, float],
    total: float,
    total_device: float,
    n: int,
    on_device: bool,
) -> list[PhaseRow]:
    """One row per phase that ran, in ``phases.ALL`` order, then the unattributed rest of the teleports."""
    calls: dict[str, int] = defaultdict(int)
    for r in ranges:
        calls[r.label] += 1
    rows = [
        _row(
            label,
            calls[label] / n,
            exclusive[label],
            device_by_label[label],
            total,
            total_device,
            n,
            on_device,
        )
        for label in phases.ALL
        if calls[label]
    ]
    rows.append(
        _row(
            UNATTRIBUTED,
            1.0,
            exclusive[TELEPORT],
            device_by_label[TELEPORT],
            total,
            total_device,
            n,
            on_device,
        )
    )
    return rows


def _row(
    label: str,
    calls: float,
    cpu_us: float,
    device_us: float,
    total_us: float,
    total_device_us: float,
    n: int,
    on_device: bool,
) -> PhaseRow:
    device_share = (device_us / total_device_us if total_device_us > 0 else 0.0) if on_device else None
    return PhaseRow(label, calls, cpu_us / n / 1e6, cpu_us / total_us, device_us / n / 1e6, device_share)


def _segments(ranges: Sequence[_Range]) -> tuple[list[float], list[str | None]]:
    """Cut the timeline at every range boundary: ``owners[i]`` is the innermost range open on
    ``[times[i], times[i+1])`` (None outside all of them). Ranges must nest, as ``record_function`` ranges
    on one thread do, and come sorted by start (outer first on ties)."""
    times: list[float] = []
    owners: list[str | None] = []
    stack: list[_Range] = []

    def cut(at: float, owner: str | None) -> None:
        if times and times[-1] == at:
            owners[-1] = owner
        else:
            times.append(at)
            owners.append(owner)

    for r in ranges:
        while stack and stack[-1].end <= r.start:
            done = stack.pop()
            cut(done.end, stack[-1].label if stack else None)
        stack.append(r)
        cut(r.start, r.label)
    while stack:
        done = stack.pop()
        cut(done.end, stack[-1].label if stack else None)
    return times, owners
