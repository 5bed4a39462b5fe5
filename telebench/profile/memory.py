"""Memory a teleport needs, per phase and in total, next to what one forward+backward pass needs.

Per phase, from the profiler's memory view (``profile_memory=True``): every allocation and free is an
event carrying the allocator's running total, so a phase's **peak extra** memory is the highest total
while it runs minus the total when it began. That works alike on CPU and CUDA. The memory pass is a
separate, untimed run, because recording every allocation slows the teleport down.

On CUDA the caching allocator's own counters give the whole teleport's peak as well
(``torch.cuda.reset_peak_memory_stats`` then ``max_memory_allocated`` / ``max_memory_reserved``). On
CPU the process's peak resident set (``getrusage``) is recorded too; it is a high-water mark of the
whole process, data loading included, so the per-phase figures are the ones to read.
"""

from __future__ import annotations

import bisect
import json
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from telebench.profile.breakdown import LABELS, TELEPORT
from telebench.profile.quiet import quiet_profiler
from telebench.profile.workload import Workload

GRADIENT = "gradient"  # the range around the forward+backward pass measured for comparison
DEVICE_TYPES = {"cpu": 0, "cuda": 1}  # c10::DeviceType codes in the trace's memory events


@dataclass
class PhaseMemory:
    label: str
    peak_extra_bytes: int


@dataclass
class MemoryReport:
    device: str
    phases: list[PhaseMemory] = field(default_factory=list)  # "teleport", its phases, then "gradient"
    cuda_allocated_before: int | None = None  # bytes live when the teleport began
    cuda_max_allocated: int | None = None  # the allocator's peak during the teleport
    cuda_max_reserved: int | None = None
    cuda_gradient_max_allocated: int | None = None  # the same for one forward+backward pass
    peak_rss_bytes: int | None = None  # the process's high-water mark (CPU)

    def peak(self, label: str) -> int | None:
        return next((p.peak_extra_bytes for p in self.phases if p.label == label), None)


def measure_memory(workload: Workload, per_phase: bool = True) -> MemoryReport:
    """One teleport and one forward+backward pass, measured for memory (the caller warms up first)."""
    report = MemoryReport(device=str(workload.device))
    if per_phase:
        report.phases = _profiled_peaks(workload)
    if workload.device.type == "cuda":
        _cuda_peaks(workload, report)
    report.peak_rss_bytes = peak_rss_bytes()
    return report


def _profiled_peaks(workload: Workload) -> list[PhaseMemory]:
    activities = [ProfilerActivity.CPU]
    if workload.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    workload.restore()
    workload.model.zero_grad(set_to_none=True)
    workload.synchronize()
    with quiet_profiler(), profile(activities=activities, profile_memory=True) as prof:
        with record_function(TELEPORT):
            workload.teleport()
        workload.synchronize()
        with record_function(GRADIENT):
            workload.gradient()
        workload.synchronize()
    workload.restore()
    workload.model.zero_grad(set_to_none=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory-trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    peaks = phase_peaks(events, DEVICE_TYPES[workload.device.type], (*LABELS, GRADIENT))
    return [PhaseMemory(label, peaks[label]) for label in (*LABELS, GRADIENT) if label in peaks]


def phase_peaks(
    events: Iterable[Mapping[str, Any]], device_type: int, labels: Iterable[str]
) -> dict[str, int]:
    """Per label, the largest rise of the allocator's total above its value when a range of that label
    began, over all its ranges, from Chrome-trace events (``[memory]`` instants and annotation ranges)."""
    wanted = set(labels)
    memory: list[tuple[float, int, int]] = []
    ranges: list[tuple[str, float, float]] = []
    for e in events:
        args = e.get("args") or {}
        if e.get("name") == "[memory]" and args.get("Device Type") == device_type:
            memory.append((float(e["ts"]), int(args["Total Allocated"]), int(args["Bytes"])))
        elif e.get("cat") == "user_annotation" and e.get("name") in wanted:
            ranges.append((e["name"], float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))))
    memory.sort(key=lambda m: m[0])
    times = [m[0] for m in memory]
    peaks: dict[str, int] = {}
    for label, start, end in ranges:
        first, last = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
        extra = 0
        if last > first:
            base = memory[first - 1][1] if first > 0 else memory[0][1] - memory[0][2]
            extra = max(0, max(m[1] for m in memory[first:last]) - base)
        peaks[label] = max(peaks.get(label, 0), extra)
    return peaks


def _cuda_peaks(workload: Workload, report: MemoryReport) -> None:
    device = workload.device
    workload.restore()
    workload.model.zero_grad(set_to_none=True)
    workload.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    report.cuda_allocated_before = torch.cuda.memory_allocated(device)
    workload.teleport()
    workload.synchronize()
    report.cuda_max_allocated = torch.cuda.max_memory_allocated(device)
    report.cuda_max_reserved = torch.cuda.max_memory_reserved(device)
    workload.restore()
    workload.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    workload.gradient()
    workload.synchronize()
    report.cuda_gradient_max_allocated = torch.cuda.max_memory_allocated(device)
    workload.model.zero_grad(set_to_none=True)


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size (None where ``resource`` does not exist, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
