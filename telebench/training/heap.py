"""Python's cyclic garbage collector, kept off the clocks.

A full collection scans every object the collector tracks. Once torch, ``torch._dynamo`` (which
``torch.optim`` imports at the first optimizer) and sympy are loaded, that is about 320,000 objects,
and one collection took 130–270 ms on the shared 2-core CPU. It lands on whichever span is running:
in quickstarts one fell inside a trial's training clock (about 0.1 s in all) and one inside an evaluation.
Imports allocate in bursts that trigger such collections; the quickstart ran seven, 0.7–0.9 s.

So start-up runs with collections paused, and the objects alive once the process's first warm-up has
imported everything are frozen (:func:`gc.freeze`: moved to a generation that no collection scans).
They live as long as the process anyway. Later collections scan only what trials allocate. Only the
start-up heap is frozen, once per process, so a trial's cyclic garbage is still collected.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_frozen = False
_lock = threading.Lock()
_depth = 0  # paused blocks open now, in any thread: the collector resumes when the last one ends
_was_enabled = False


@contextmanager
def paused(freeze: bool = False) -> Iterator[None]:
    """No collections inside the block; with ``freeze``, the first such block in a process freezes
    every object alive when it ends. Blocks nest (and may overlap across threads): the collector's
    state from before the outermost one is restored when the last one ends."""
    global _frozen, _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            if freeze and not _frozen:
                gc.freeze()
                _frozen = True
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
