"""How much work one teleport does next to one gradient evaluation: operator calls and matrix-product flops.

Counted, not timed, so the figures are exact and the same on every machine:

* **operator calls**: every aten operator that runs below a ``TorchDispatchMode``, views (transposes,
  slices, ``detach``) counted apart, since one costs a fraction of a real operator;
* **matrix-product flops**: ``torch.utils.flop_counter``'s count (matrix products, batched ones and
  convolutions; not QR, Cholesky or triangular solves, which a teleport only runs on small matrices).

The two ratios say what bounds a teleport's cost. On one CPU thread a product of small matrices costs
its call, a few microseconds whatever its arithmetic, so a teleport whose call ratio far exceeds its
measured cost in gradient evaluations is bound by calls; where both sides run at the matrix
product's speed, the flop ratio is the floor of the teleport's cost in gradient evaluations.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

VIEWS = frozenset({"t", "mT", "transpose", "view", "_unsafe_view", "detach", "alias", "slice", "select", "unsqueeze",
                   "expand", "as_strided", "permute", "squeeze", "reshape", "_reshape_alias", "split", "split_with_sizes",
                   "unbind", "diagonal", "narrow"})


@dataclass(frozen=True)
class Work:
    """What one call did: operator calls (views apart) and matrix-product flops."""

    calls: int
    views: int
    flops: int


@dataclass(frozen=True)
class WorkCounts:
    """One teleport's work and one gradient evaluation's, on the same model and batch."""

    teleport: Work
    gradient: Work

    @property
    def call_ratio(self) -> float | None:
        return self.teleport.calls / self.gradient.calls if self.gradient.calls else None

    @property
    def flop_ratio(self) -> float | None:
        """The teleport's floor in gradient evaluations where both sides run at the matrix product's speed."""
        return self.teleport.flops / self.gradient.flops if self.gradient.flops else None


class _Calls(TorchDispatchMode):
    """Counts every aten operator call below it, by operator name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count(run: Callable[[], object]) -> Work:
    """The work of one call of ``run``."""
    with _Calls() as calls, FlopCounterMode(display=False) as flops:
        run()
    views = sum(n for name, n in calls.calls.items() if name in VIEWS)
    return Work(sum(calls.calls.values()) - views, views, int(flops.get_total_flops()))


def count_work(teleport: Callable[[], object], gradient: Callable[[], object],
               restore: Callable[[], None] | None = None) -> WorkCounts:
    """One teleport's and one gradient evaluation's work (``restore`` puts the starting weights back
    before and after the teleport, which moves them)."""
    if restore is not None:
        restore()
    moved = count(teleport)
    if restore is not None:
        restore()
    return WorkCounts(moved, count(gradient))
