"""The collector policy that keeps full garbage collections off the clocks (telebench.training.heap):
paused inside, the start-up heap frozen once per process, the collector's own state restored."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from telebench.experiments.pairs.spec import BudgetSpec, TargetSpec, TrialSpec
from telebench.experiments.pairs.task import run_pair
from telebench.training import heap
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec


@pytest.fixture
def fresh_heap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process that has frozen nothing yet; whatever a test freezes is unfrozen after it."""
    monkeypatch.setattr(heap, "_frozen", False)
    gc.unfreeze()
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    gc.enable() if enabled else gc.disable()


def test_no_collection_runs_inside_and_the_collector_is_enabled_again_after(fresh_heap: None) -> None:
    gc.enable()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        kept = [[] for _ in range(20_000)]  # live allocations far above the youngest generation's threshold
        assert collections, "the collector should have run outside the block"
        with heap.paused():
            assert not gc.isenabled()
            collections.clear()  # entering may itself allocate past the threshold, before the pause
            kept += [[] for _ in range(20_000)]
            assert collections == []
        assert gc.isenabled()
        assert gc.get_freeze_count() == 0  # freezing only when asked
    finally:
        gc.callbacks.remove(count)


def test_a_collector_the_caller_disabled_stays_disabled(fresh_heap: None) -> None:
    gc.disable()
    with heap.paused(freeze=True):
        pass
    assert not gc.isenabled()


def test_the_start_up_heap_is_frozen_once_and_later_objects_stay_collectable(fresh_heap: None) -> None:
    with heap.paused(freeze=True):
        pass
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # every object alive at start-up: modules, functions, torch's own
    later = [[] for _ in range(5000)]
    with heap.paused(freeze=True):  # a second warm-up in the same process freezes nothing more
        pass
    assert gc.get_freeze_count() == frozen
    del later


def test_nested_blocks_resume_the_collector_only_when_the_outermost_ends(fresh_heap: None) -> None:
    gc.enable()
    with heap.paused():
        with heap.paused(freeze=True):
            pass
        assert not gc.isenabled()  # the inner block ended, the outer one has not
    assert gc.isenabled()


def test_an_exception_inside_still_restores_the_collector(fresh_heap: None) -> None:
    gc.enable()
    with pytest.raises(RuntimeError), heap.paused(freeze=True):
        raise RuntimeError("a failing warm-up")
    assert gc.isenabled() and gc.get_freeze_count() > 0


def test_a_pair_freezes_the_start_up_heap_at_its_warm_up_and_leaves_the_collector_on(fresh_heap: None,
                                                                                     one_thread: None) -> None:
    gc.enable()
    spec = TrialSpec(suite="heap", case="digits", arm="baseline", arm_kind="baseline", dataset=DatasetSpec("digits"),
                     model=ModelSpec((64, 8, 10), "relu"), optimizer=OptimizerSpec("sgd", 0.05),
                     optimizer_label="sgd", teleport=None, device="cpu", seed=0, batch_size=32,
                     budget=BudgetSpec("steps", 5), eval_every=5, target=TargetSpec())
    (record,) = run_pair([spec], None)
    assert record["status"] == "ok"
    assert gc.get_freeze_count() > 0 and gc.isenabled()
