"""Clock bookkeeping (nesting, lazy folding as on CUDA) and device resolution, on the CPU."""

from __future__ import annotations

import pytest
import torch

from telebench.errors import UserError
from telebench.training.clock import Clock, HostTimer, resolve_device


class ManualTimer:
    """A timer whose time only moves when the test says so, standing in for CUDA events:
    deferred, so stamps must be synchronised before they can be read."""

    deferred = True

    def __init__(self) -> None:
        self.now = 0.0
        self.synchronizations = 0
        self.live_marks = 0

    def mark(self) -> float:
        self.live_marks += 1
        return self.now

    def synchronize(self) -> None:
        self.synchronizations += 1

    def elapsed(self, start: float, end: float) -> float:
        assert self.synchronizations > 0, "read an event before synchronising"
        return end - start

    def release(self, mark: float) -> None:
        self.live_marks -= 1


def test_nested_spans_accumulate_per_name_and_fold_only_in_read() -> None:
    timer = ManualTimer()
    clock = Clock("cpu", timer=timer)
    for _ in range(3):  # three steps: 1 s of data, then a 2 s teleport, then 0.5 s, all inside "train"
        with clock.span("train"):
            timer.now += 1.0
            with clock.span("teleport"):
                timer.now += 2.0
            timer.now += 0.5
        with clock.span("eval"):
            timer.now += 10.0
    assert timer.synchronizations == 0  # nothing synchronises while training
    totals = clock.read()
    assert totals == {"train": 10.5, "teleport": 6.0, "eval": 30.0}
    assert timer.synchronizations == 1 and timer.live_marks == 0  # one sync; every stamp released
    assert clock.read() == totals and timer.synchronizations == 1  # nothing pending: no second sync

    with clock.span("train"):
        timer.now += 4.0
    assert clock.total("train") == 14.5 and timer.synchronizations == 2
    assert clock.total("never-ran") == 0.0


def test_open_spans_are_not_counted_until_they_close() -> None:
    timer = ManualTimer()
    clock = Clock("cpu", timer=timer)
    with clock.span("train"):
        timer.now += 1.0
        with clock.span("teleport"):
            timer.now += 1.0
        assert clock.read() == {"train": 0.0, "teleport": 1.0}
        timer.now += 1.0
    assert clock.read() == {"train": 3.0, "teleport": 1.0}


def test_time_in_a_failing_span_still_counts() -> None:
    timer = ManualTimer()
    clock = Clock("cpu", timer=timer)
    with pytest.raises(ZeroDivisionError), clock.span("train"):
        timer.now += 2.0
        _ = 1 / 0
    assert clock.total("train") == 2.0
    with clock.span("train"):  # the name is free again after the failure
        timer.now += 1.0
    assert clock.total("train") == 3.0


def test_a_name_cannot_nest_inside_itself() -> None:
    clock = Clock("cpu")
    with clock.span("train"), pytest.raises(RuntimeError, match="already open"), clock.span("train"):
        pass


def test_host_clock_eager_and_deferred_agree_on_structure() -> None:
    for deferred in (False, True):
        timer = HostTimer(deferred=deferred)
        clock = Clock(torch.device("cpu"), timer=timer)
        with clock.span("train"):
            with clock.span("teleport"):
                torch.randn(64, 64) @ torch.randn(64, 64)
            torch.randn(64, 64) @ torch.randn(64, 64)
        totals = clock.read()
        assert totals["train"] >= totals["teleport"] > 0.0
        assert timer.synchronizations == (1 if deferred else 0)


def test_default_cpu_clock_uses_perf_counter() -> None:
    clock = Clock("cpu")
    assert isinstance(clock.timer, HostTimer) and not clock.timer.deferred
    with clock.span("train"):
        pass
    assert clock.total("train") >= 0.0


# ---- devices --------------------------------------------------------------------------------------
def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_cuda(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_cuda_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_cuda(monkeypatch)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UserError, match=r"no CUDA device is available.*devices: \[cpu\]"):
            resolve_device(name)
    with pytest.raises(UserError, match="no CUDA device is available"):
        Clock("cuda")


def test_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(UserError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("name", ["mps", "gpu", "cuda:x", ""])
def test_unknown_device_names(name: str) -> None:
    with pytest.raises(UserError, match="use one of auto, cpu, cuda, cuda:N"):
        resolve_device(name)
