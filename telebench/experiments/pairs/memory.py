"""How much memory a train case's pairs need, estimated before any tensor is allocated.

A pair trains all its arms in one process, so each arm's model, gradients, optimizer state and
teleport work space live at once. The estimate is deliberately generous; it only has to tell a
model that fits from one that would exhaust the machine (a 100,000-wide layer asks for tens of GB).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

BYTES = 4  # float32
COPIES = 8  # weights, gradients, up to two optimizer buffers, and the teleport's working copies
ACTIVATION_COPIES = 4  # forward activations and their gradients, on the training and evaluation batches
MAX_SHARE = 0.5  # refuse a pair estimated to need more than this share of the machine's memory


def parameters(widths: Sequence[int], bias: bool = True) -> int:
    return sum(a * b + (b if bias else 0) for a, b in zip(widths, widths[1:], strict=False))


GROUP_COPIES = 4  # a dense group element per hidden layer: the element, its algebra, gradient and inverse
DENSE_GROUPS = ("linear", "gl-data")  # GL(n) per hidden layer: width × width matrices (rescale is diagonal)


def pair_bytes(widths: Sequence[int], bias: bool, arms: int, batch: int, eval_batch: int,
               dense_group: bool = False) -> int:
    """Estimated peak bytes of one pair of `arms` arms; `dense_group` when an arm teleports along GL(n)."""
    weights = parameters(widths, bias) * BYTES * COPIES
    activations = max(batch, eval_batch) * sum(widths) * BYTES * ACTIVATION_COPIES
    group = sum(w * w for w in widths[1:-1]) * BYTES * GROUP_COPIES if dense_group else 0
    return arms * (weights + activations) + group


def family_pair_bytes(n_params: int, activations_per_sample: int, arms: int, batch: int, eval_batch: int) -> int:
    """Estimated peak bytes of one pair of a CNN, ResNet, transformer or factory model, from one build:
    its parameters and the numbers its modules output per input row (site groups are diagonal or per head)."""
    weights = n_params * BYTES * COPIES
    activations = max(batch, eval_batch) * activations_per_sample * BYTES * ACTIVATION_COPIES
    return arms * (weights + activations)


def machine_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def describe_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TB"
