"""Diagonal group elements stay vectors: a 100,000-wide rescale teleport never forms width × width.

Every aten operation of the teleport, of reading its record and of transporting an optimizer's state
through it is first run on meta tensors (shapes only, no memory); one whose output would hold
width² numbers (40 GB in float32 here) fails the test before it allocates anything.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map

from telebench.symmetry import teleport
from telebench.training.transport import transport_state

WIDTH = 100_000

pytestmark = pytest.mark.usefixtures("one_thread")


class NoHugeTensors(TorchDispatchMode):
    """Refuse any operation whose output would hold ``limit`` numbers or more; record the largest."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.largest, self.ops = limit, 0, 0

    def _check(self, func: object, out: object) -> None:
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                assert t.numel() < self.limit, f"{func} would make a tensor of shape {tuple(t.shape)}"
                self.largest = max(self.largest, t.numel())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        with _disable_current_modes():
            try:
                meta = tree_map(lambda t: t.to("meta") if isinstance(t, Tensor) else t, (args, kwargs))
                shapes = func(*meta[0], **meta[1])
            except (NotImplementedError, RuntimeError, TypeError):  # no meta kernel (e.g. reading a value)
                shapes = None
        if shapes is not None:
            self._check(func, shapes)
        out = func(*args, **kwargs)
        self._check(func, out)
        return out


def test_a_100k_wide_rescale_teleport_and_its_transport_form_no_width_squared_tensor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 3))
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    before = [p.detach().clone() for p in model.parameters()]
    guard = NoHugeTensors(limit=WIDTH * WIDTH // 100)  # far below width²: even a tenth of a square fails
    with guard:
        rec = teleport(model, x, y, F.cross_entropy, group="rescale", steps=10, lr=0.1, normalize_step=True)
        assert rec.accepted and rec.relative_weight_change > 1e-3
        assert [tuple(t.left_factor.shape) for t in rec.transforms] == [(WIDTH,)]
        assert [tuple(t.right_factor.shape) for t in rec.transforms] == [(WIDTH,)]
        assert rec.to_dict()["algebra_norm"] > 0
        transport_state(optimizer, list(model.parameters()), rec.transforms)
    assert guard.ops > 50 and guard.largest <= 4 * WIDTH * 8  # nothing bigger than a few copies of a weight
    s = rec.transforms[0].left_factor
    for old, new, scale in zip(before, model.parameters(), (s[:, None], s, 1 / s[None, :]), strict=False):
        assert torch.allclose(new.detach(), old * scale, rtol=1e-5)


def test_the_guard_catches_a_width_squared_tensor():
    with pytest.raises(AssertionError, match="would make a tensor of shape"), NoHugeTensors(limit=WIDTH * WIDTH // 100):
        torch.diag(torch.ones(WIDTH))
