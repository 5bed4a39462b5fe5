"""The names a suite may use, looked up lazily in the modules that own them.

The suite loader must validate dataset, optimizer, group and activation names without pulling
those modules in at import time (and without breaking while one of them is being written), so
every lookup tries the owning module first and falls back to the documented literal list.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

DATASETS = ("synthetic-regression", "synthetic-classification", "digits", "fashion-mnist", "mnist", "cifar10",
            "modular-addition")
OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
GROUPS = ("rescale", "linear", "gl-data", "channel-rescale", "norm-scale", "attention", "auto")
OBJECTIVES = ("grad_norm", "sharpness", "curvature", "curvature_reference")
ACTIVATIONS = ("relu", "leaky_relu", "identity", "linear", "tanh", "sigmoid", "gelu")
EXECUTORS = ("local", "process", "ray")

# Activations under which each built-in group leaves the network function unchanged.
GROUP_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "rescale": ("relu", "leaky_relu", "identity", "linear"),
    "linear": ("identity", "linear"),
    "gl-data": ("leaky_relu",),
}

# Fallbacks used only while telebench.training.datasets is unavailable.
_SHAPES = {"digits": (64, 10), "fashion-mnist": (784, 10), "mnist": (784, 10), "cifar10": (3072, 10)}
_TRAIN_SIZES = {"digits": 1797, "fashion-mnist": 60000, "mnist": 60000, "cifar10": 50000}  # whole files: upper bounds
_TORCH_OPTIMIZERS = {"sgd": "SGD", "momentum": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam"}


def _lookup(module: str, attr: str) -> Any | None:
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def _names(found: Any, fallback: tuple[str, ...]) -> tuple[str, ...]:
    if found is None:
        return fallback
    if callable(found) and not isinstance(found, Mapping):
        found = found()
    return tuple(found)


def dataset_names() -> tuple[str, ...]:
    return _names(_lookup("telebench.training.datasets", "dataset_names"), DATASETS)


def optimizer_names() -> tuple[str, ...]:
    return _names(_lookup("telebench.training.optimizers", "OPTIMIZERS"), OPTIMIZERS)


def group_names() -> tuple[str, ...]:
    return _names(_lookup("telebench.symmetry", "GROUP_NAMES"), GROUPS)


def objective_names() -> tuple[str, ...]:
    return _names(_lookup("telebench.symmetry", "OBJECTIVES"), OBJECTIVES)


def activation_names() -> tuple[str, ...]:
    return _names(_lookup("telebench.training.models", "ACTIVATIONS"), ACTIVATIONS)


def optimizer_kwargs_allowed(name: str) -> tuple[str, ...]:
    """Keyword arguments an optimizer accepts besides `lr` (from the factory, else torch's signature)."""
    owner = _lookup("telebench.training.optimizers", "optimizer_kwargs_allowed")
    if owner is not None:
        return tuple(sorted(owner(name)))
    import torch

    cls = getattr(torch.optim, _TORCH_OPTIMIZERS[name])
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in params if p.kind in kinds and p.name not in {"self", "params", "lr"})


def dataset_shape(name: str, params: dict[str, Any]) -> tuple[int, int] | None:
    """(n_features, n_outputs) of a dataset, or None where it cannot be known without the data module.

    The data module raises for parameters it does not accept; that propagates to the caller,
    which reports it against the suite's key path.
    """
    owner = _lookup("telebench.training.datasets", "dataset_shape")
    if owner is not None:
        return tuple(owner(name, params))
    return _SHAPES.get(name)


def dataset_inputs(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """What one input row of a dataset is (features, an image of (C, H, W), or token ids), from its params."""
    owner = _lookup("telebench.training.datasets", "dataset_inputs")
    if owner is not None:
        return dict(owner(name, params))
    return {"kind": "features"}


def dataset_sizes(name: str, params: dict[str, Any]) -> tuple[int, int, int] | None:
    """(n_train, n_val, n_test) with these parameters, or None where unknown without the data module."""
    owner = _lookup("telebench.training.datasets", "dataset_sizes")
    if owner is not None:
        return tuple(owner(name, params))
    if name in _TRAIN_SIZES:
        return int(params.get("n_train", _TRAIN_SIZES[name])), 0, 0
    return None


def dataset_train_size(name: str, params: dict[str, Any]) -> int | None:
    sizes = dataset_sizes(name, params)
    return None if sizes is None else sizes[0]


def cuda_device_count() -> int:
    """How many CUDA devices torch sees (torch is imported only when a suite asks for CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
