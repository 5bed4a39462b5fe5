"""Python's cyclic garbage collector, kept off the clocks.

A full collection scans every object the collector tracks. Once torch, ``torch._dynamo`` (which
``torch.optim`` imports at the first optimizer) and sympy are loaded, that is about 320,000 objects,
and one collection took 130–270 ms on the shared 2-core CPU. It lands on whichever span is running:
in a quickstart it once fell inside an evaluation, and a trial's whole training clock is about 0.1 s.
Imports allocate in bursts that trigger such collections; the quickstart ran seven, 0.7–0.9 s.

So start-up runs with collections paused, and the objects alive once the process's first warm-up has
imported everything are frozen (:func:`gc.freeze`: moved to a generation that no collection scans).
They live as long as the process anyway. Later collections scan only what trials allocate. Only the
start-up heap is frozen, once per process, so a trial's cyclic garbage is still collected.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_frozen = False


@contextmanager
def paused(freeze: bool = False) -> Iterator[None]:
    """No collections inside the block; with ``freeze``, the first such block in a process freezes
    every object alive when it ends. The collector's previous state is restored either way."""
    global _frozen
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze and not _frozen:
            gc.freeze()
            _frozen = True
        if enabled:
            gc.enable()
