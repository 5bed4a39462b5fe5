"""Optimizer factory and the optimizer-state policy applied at each teleport (DESIGN §3).

The paper's code rebuilds its optimizer after every teleport, silently zeroing momentum,
accumulators and Adam's step count. telebench makes that a named policy, so the restart's
effect can be measured apart from the teleport's.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Sequence
from functools import cache

import torch

from telebench.errors import UserError
from telebench.training.optimizer_state import DEFAULT_KWARGS as _DEFAULT_KWARGS
from telebench.training.specs import OptimizerSpec, thaw
from telebench.training.transport import GroupElement, transport_state

OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
STATE_POLICIES = ("reset", "keep", "transport")  # what a teleport does to the optimizer state

# The concrete classes, not type[Optimizer]: the base class's constructor takes no `lr`.
_OptimizerClass = type[torch.optim.SGD | torch.optim.Adagrad | torch.optim.RMSprop | torch.optim.Adam]
_CLASSES: dict[str, _OptimizerClass] = {
    "sgd": torch.optim.SGD,
    "momentum": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
}


def _suggest(word: str, choices: Iterable[str]) -> str:
    near = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _check_name(name: str) -> None:
    if name not in _CLASSES:
        raise UserError(
            f"optimizer {name!r} is unknown{_suggest(name, OPTIMIZERS)}; use one of {', '.join(OPTIMIZERS)}."
        )


@cache
def optimizer_kwargs_allowed(name: str) -> frozenset[str]:
    """The keyword arguments the torch class behind `name` accepts, besides params and lr."""
    _check_name(name)
    signature = inspect.signature(_CLASSES[name].__init__)
    return frozenset(p for p in signature.parameters if p not in ("self", "params", "lr"))


def make_optimizer(spec: OptimizerSpec, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """Build the torch optimizer named by `spec`; `momentum` is SGD with momentum 0.9 unless kwargs say otherwise."""
    _check_name(spec.name)
    kwargs = {**_DEFAULT_KWARGS.get(spec.name, {}), **thaw(spec.kwargs)}
    allowed = optimizer_kwargs_allowed(spec.name)
    for key in kwargs:
        if key not in allowed:
            raise UserError(
                f"optimizer {spec.name!r} has no option {key!r}{_suggest(key, allowed)}; "
                f"allowed kwargs: {', '.join(sorted(allowed))}."
            )
    if not spec.lr > 0:
        raise UserError(f"optimizer {spec.name!r} needs a positive lr, got {spec.lr!r}.")
    try:
        return _CLASSES[spec.name](params, lr=spec.lr, **kwargs)
    except (ValueError, TypeError) as exc:  # torch's own range and type checks on kwargs
        raise UserError(
            f"optimizer {spec.name!r} rejected its kwargs {kwargs}: {exc}; fix the value."
        ) from exc


def apply_state_policy(
    optimizer: torch.optim.Optimizer,
    policy: str,
    spec: OptimizerSpec,
    params: Iterable[torch.Tensor],
    transforms: Sequence[GroupElement] | None = None,
) -> torch.optim.Optimizer:
    """What happens to the optimizer's state after the weights are teleported in place.

    reset: a fresh optimizer over the same parameter tensors, as the paper's code does (momentum,
    accumulators and Adam's step count all start from zero). keep: the same optimizer, its state
    untouched. transport: the same optimizer, its state mapped in place through the applied group
    elements (`transforms`, one per hidden layer; None or empty means nothing moved), see
    docs/state-transport.md.
    """
    if policy == "reset":
        return make_optimizer(spec, params)
    if policy == "keep":
        return optimizer
    if policy == "transport":
        transport_state(optimizer, list(params), transforms or [])
        return optimizer
    raise UserError(f"optimizer state policy {policy!r} is unknown; use one of {', '.join(STATE_POLICIES)}.")
