"""A seeded stream of minibatches sliced from whole tensors already on the training device.

Slicing with a seeded permutation instead of a DataLoader keeps Python data plumbing off the
training clock (DESIGN §4), and arms of one seed build their streams with the same seed and
therefore see identical batches.
"""

from __future__ import annotations

import torch
from torch import Tensor

from telebench.errors import UserError


class BatchStream:
    """Minibatches of (x, y) in a seeded order that is reshuffled every epoch; the last partial
    batch is dropped so every step has the same size. Indices are drawn on the CPU and moved,
    so one seed gives the same batches on every device."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        if batch_size < 1 or batch_size > len(x):
            raise UserError(
                f"batch size {batch_size} must be between 1 and the {len(x)} training examples; change batch_size."
            )
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.steps_per_epoch = len(x) // batch_size
        self.epoch = 0  # epoch of the next batch
        self.index_in_epoch = 0  # position of the next batch within its epoch
        self._generator = torch.Generator().manual_seed(seed)
        self._order = self._shuffle()

    def _shuffle(self) -> Tensor:
        return torch.randperm(len(self.x), generator=self._generator).to(self.x.device)

    def next(self) -> tuple[Tensor, Tensor]:
        """The next batch; crossing an epoch boundary reshuffles deterministically."""
        start = self.index_in_epoch * self.batch_size
        rows = self._order[start : start + self.batch_size]
        batch = self.x.index_select(0, rows), self.y.index_select(0, rows)
        self.index_in_epoch += 1
        if self.index_in_epoch == self.steps_per_epoch:
            self.epoch += 1
            self.index_in_epoch = 0
            self._order = self._shuffle()
        return batch
