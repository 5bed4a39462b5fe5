"""MLPs in exactly the shape `telebench.symmetry` acts on: nn.Sequential(Linear, act, ..., Linear).

Initialisation is seeded through a local generator (never the global RNG) so that every arm of a
seed starts from the same weights, on any device and in any dtype.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable

import torch
from torch import nn

from telebench.errors import UserError
from telebench.training.specs import ModelSpec

ACTIVATIONS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "relu": lambda spec: nn.ReLU(),
    "leaky_relu": lambda spec: nn.LeakyReLU(spec.negative_slope),
    "identity": lambda spec: nn.Identity(),
    "linear": lambda spec: nn.Identity(),  # alias: a linear network
    "tanh": lambda spec: nn.Tanh(),
    "sigmoid": lambda spec: nn.Sigmoid(),
    "gelu": lambda spec: nn.GELU(),
}


def make_activation(spec: ModelSpec) -> nn.Module:
    """The activation module named by `spec.activation`, or a UserError listing the choices."""
    factory = ACTIVATIONS.get(spec.activation)
    if factory is None:
        near = difflib.get_close_matches(spec.activation, ACTIVATIONS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise UserError(
            f"model activation {spec.activation!r} is unknown{hint}; use one of {', '.join(ACTIVATIONS)}."
        )
    return factory(spec)


def _check_widths(widths: tuple[int, ...]) -> None:
    if len(widths) < 2:
        raise UserError(
            f"model widths {list(widths)} need at least an input and an output width, e.g. [784, 16, 10]."
        )
    bad = [w for w in widths if isinstance(w, bool) or not isinstance(w, int) or w < 1]
    if bad:
        raise UserError(f"model widths {list(widths)} must all be positive integers; {bad[0]!r} is not.")


def _linear(fan_in: int, fan_out: int, bias: bool, device: str | torch.device, dtype: torch.dtype) -> nn.Linear:
    """An nn.Linear whose default init leaves the global RNG as it was (the values are overwritten).
    Not ``nn.utils.skip_init``: its meta-device round trip costs about 0.6 s on its first call in a
    process (torch's Python meta kernels), a few per cent of a quick suite's wall time."""
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        return nn.Linear(fan_in, fan_out, bias=bias, device=dev, dtype=dtype)


def build_mlp(
    spec: ModelSpec,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """Linear, act, Linear, act, ..., Linear, with PyTorch's default Linear distribution
    (weights and biases uniform on ±1/sqrt(fan_in), which is also the paper's `init_param_MLP`).

    Values are drawn in float64 on the CPU from a generator seeded with `seed`, then cast and
    moved, so one seed gives the same network on every device and (up to rounding) every dtype.
    `seed=None` draws from the global RNG, so `torch.manual_seed` still controls it.
    """
    _check_widths(spec.widths)
    make_activation(spec)  # fail on a bad name before allocating anything
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    pairs = list(zip(spec.widths[:-1], spec.widths[1:], strict=True))
    for i, (fan_in, fan_out) in enumerate(pairs):
        linear = _linear(fan_in, fan_out, spec.bias, device, dtype)
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            for param in linear.parameters():
                values = (
                    torch.rand(param.shape, generator=generator, dtype=torch.float64) * (2 * bound) - bound
                )
                param.copy_(values)
        layers.append(linear)
        if i < len(pairs) - 1:
            layers.append(make_activation(spec))
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars, for plan estimates and reports."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
