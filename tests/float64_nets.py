"""Small seeded float64 MLPs and inputs, shared by the metric tests (sharpness, curvature, the reference ψ)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def mlp(widths: tuple[int, ...], act: Callable[[], nn.Module] = lambda: nn.LeakyReLU(0.1), bias: bool = True,
        seed: int = 0) -> nn.Sequential:
    """Linear, act, ..., Linear in float64, initialised under `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers).double()


def inputs(n: int, d: int, seed: int = 1) -> torch.Tensor:
    """n standard-normal float64 rows of d features from their own seeded generator."""
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
