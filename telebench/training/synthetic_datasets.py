"""Synthetic datasets drawn from a random teacher network: learnable targets with no files to fetch.

Every part (teacher, reference sample, train and validation sets) draws from its own generator,
so changing one size never reshuffles another part.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from telebench.training.dataset_bundle import CLASSIFICATION, REGRESSION, DatasetBundle


def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent generator per (seed, purpose), so changing one size never reshuffles another part."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def _teacher(
    n_features: int, n_outputs: int, generator: torch.Generator, hidden: int = 32
) -> Callable[[Tensor], Tensor]:
    """A random one-hidden-layer tanh network: a smooth, learnable, not-linear target."""
    first = torch.randn(n_features, hidden, generator=generator) * (1.5 / math.sqrt(n_features))
    shift = torch.randn(hidden, generator=generator) * 0.5
    second = torch.randn(hidden, n_outputs, generator=generator) / math.sqrt(hidden)
    return lambda x: torch.tanh(x @ first + shift) @ second


def load_synthetic_regression(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
    """Inputs uniform on [0, 1) as in the NeurIPS-2022 paper's MLP experiments. Targets are either
    a random teacher network's outputs (standardised) plus Gaussian noise, so the loss can fall to
    about noise², or, with `targets: uniform`, the paper's i.i.d. uniform targets."""
    f, o = p["n_features"], p["n_outputs"]
    teacher = _teacher(f, o, _generator(p["seed"], 0))
    reference = torch.rand(4096, f, generator=_generator(p["seed"], 1)) - 0.5
    ref_out = teacher(reference)
    mean, std = ref_out.mean(0), ref_out.std(0).clamp_min(1e-6)

    def part(n: int, stream: int) -> tuple[Tensor, Tensor]:
        g = _generator(p["seed"], stream)
        x = torch.rand(n, f, generator=g)
        if p["targets"] == "uniform":
            return x, torch.rand(n, o, generator=g)
        y = (teacher(x - 0.5) - mean) / std + p["noise"] * torch.randn(n, o, generator=g)
        return x, y

    x_train, y_train = part(p["n_train"], 2)
    x_val, y_val = part(p["n_val"], 3)
    return DatasetBundle("synthetic-regression", REGRESSION, x_train, y_train, x_val, y_val, None, None, f, o)


def load_synthetic_classification(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
    """Gaussian inputs labelled by the argmax of a random teacher network; the teacher's logits are
    centred on a reference sample so that the classes come out roughly balanced."""
    f, c = p["n_features"], p["n_classes"]
    teacher = _teacher(f, c, _generator(p["seed"], 0))
    centre = teacher(torch.randn(4096, f, generator=_generator(p["seed"], 1))).mean(0)

    def part(n: int, stream: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(n, f, generator=_generator(p["seed"], stream))
        return x, (teacher(x) - centre).argmax(1)

    x_train, y_train = part(p["n_train"], 2)
    x_val, y_val = part(p["n_val"], 3)
    return DatasetBundle(
        "synthetic-classification", CLASSIFICATION, x_train, y_train, x_val, y_val, None, None, f, c
    )
