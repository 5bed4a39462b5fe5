"""Accumulating named timers that follow DESIGN §4's timing rules on CPU and CUDA.

On CUDA a host clock only measures how fast Python enqueues kernels, so device spans are timed
with CUDA events. The events are resolved lazily: `read()` is the one place that synchronises,
and the training loop calls it only at evaluation boundaries, never per step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from telebench.training.devices import resolve_device

__all__ = ["Clock", "CudaEventTimer", "HostTimer", "Timer", "resolve_device"]


class Timer(Protocol):
    """Where a Clock gets its time stamps. `deferred` timers need `synchronize()` before `elapsed()`."""

    deferred: bool

    def mark(self) -> Any: ...

    def synchronize(self) -> None: ...

    def elapsed(self, start: Any, end: Any) -> float: ...

    def release(self, mark: Any) -> None: ...


class HostTimer:
    """time.perf_counter stamps. With `deferred=True` it folds lazily like the CUDA timer does,
    which lets the CUDA bookkeeping be tested on machines without a GPU."""

    def __init__(self, deferred: bool = False) -> None:
        self.deferred = deferred
        self.synchronizations = 0

    def mark(self) -> float:
        return time.perf_counter()

    def synchronize(self) -> None:
        self.synchronizations += 1

    def elapsed(self, start: float, end: float) -> float:
        return end - start

    def release(self, mark: float) -> None:
        pass


class CudaEventTimer:
    """CUDA events recorded on the device's current stream; resolved after one device synchronise.
    Resolved events go back to a pool, so a long run does not create one event per span."""

    deferred = True

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pool: list[torch.cuda.Event] = []

    def mark(self) -> torch.cuda.Event:
        event = self._pool.pop() if self._pool else torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def elapsed(self, start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        return start.elapsed_time(end) / 1000.0  # elapsed_time is in milliseconds

    def release(self, mark: torch.cuda.Event) -> None:
        self._pool.append(mark)


class Clock:
    """Accumulating named timers. CPU: time.perf_counter. CUDA: torch.cuda.Event pairs recorded in
    spans, resolved lazily; synchronise only in read().

    Spans may nest ("teleport" inside "train"); each name accumulates its own total, so nested time
    counts towards both names. A name cannot nest inside itself, which would count it twice.
    """

    def __init__(self, device: str | torch.device, timer: Timer | None = None) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.timer: Timer = timer or (
            CudaEventTimer(self.device) if self.device.type == "cuda" else HostTimer()
        )
        self._totals: dict[str, float] = {}
        self._pending: list[tuple[str, Any, Any]] = []
        self._open: set[str] = set()

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        """Time the body under `name`; an exception inside still counts the time spent."""
        if name in self._open:
            raise RuntimeError(f"clock span {name!r} is already open; a span cannot nest inside itself")
        self._open.add(name)
        self._totals.setdefault(name, 0.0)
        start = self.timer.mark()
        try:
            yield
        finally:
            end = self.timer.mark()
            self._open.discard(name)
            if self.timer.deferred:
                self._pending.append((name, start, end))
            else:
                self._totals[name] += self.timer.elapsed(start, end)

    def read(self) -> dict[str, float]:
        """Totals in seconds of every span closed so far (open spans are not included).
        On CUDA this synchronises the device once and folds the recorded events."""
        if self._pending:
            self.timer.synchronize()
            for name, start, end in self._pending:
                self._totals[name] += self.timer.elapsed(start, end)
                self.timer.release(start)
                self.timer.release(end)
            self._pending.clear()
        return dict(self._totals)

    def total(self, name: str) -> float:
        """One name's total in seconds (0.0 if it never ran); synchronises like read()."""
        return self.read().get(name, 0.0)
