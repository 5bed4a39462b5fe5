"""Plain-data specifications of a dataset, a model and an optimizer: hashable, picklable, shared by every kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Params = tuple[tuple[str, Any], ...]


def freeze(mapping: dict[str, Any] | None) -> Params:
    """Turn a dict (possibly nested, with lists) into a sorted tuple of pairs so it can be hashed."""

    def _f(v: Any) -> Any:
        if isinstance(v, dict):
            return tuple(sorted((k, _f(x)) for k, x in v.items()))
        if isinstance(v, (list, tuple)):
            return tuple(_f(x) for x in v)
        return v

    return tuple(sorted((k, _f(v)) for k, v in (mapping or {}).items()))


def thaw(params: Params) -> dict[str, Any]:
    """Inverse of freeze for one level (nested tuples of pairs stay tuples)."""
    return {k: v for k, v in params}


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # registry key: synthetic-regression, synthetic-classification, digits, fashion-mnist, mnist, cifar10
    params: Params = ()  # dataset options: n_train, n_val, n_features, root, download, ...


MLP = "mlp"
MODEL_FAMILIES = (MLP, "cnn", "resnet", "transformer", "factory")
MODEL_INPUTS = ("flat", "image", "tokens")


@dataclass(frozen=True)
class ModelSpec:
    """An MLP (``family`` mlp: widths, activation, slope, bias) or another family built from ``kwargs``
    (cnn, resnet, transformer: their constructors' arguments; factory: ``target`` and ``kwargs``).
    ``inputs`` says how the dataset's rows reach the model: flat features, images (C, H, W) or token ids."""

    widths: tuple[int, ...] = ()  # mlp: layer widths including input and output, e.g. (784, 16, 10, 10)
    activation: str = "leaky_relu"  # relu, leaky_relu, identity (linear), tanh, gelu ...
    negative_slope: float = 0.1  # for leaky_relu
    bias: bool = True
    family: str = MLP  # one of MODEL_FAMILIES
    kwargs: Params = ()  # the family's constructor arguments (resolved, data-derived ones included)
    inputs: str = "flat"  # one of MODEL_INPUTS

    @property
    def is_mlp(self) -> bool:
        return self.family == MLP

    def describe(self) -> str:
        """A one-line name for tables: the widths of an MLP, the family and its arguments otherwise."""
        if self.is_mlp:
            return "-".join(str(w) for w in self.widths)
        args = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in self.kwargs)
        return f"{self.family}({args})"


@dataclass(frozen=True)
class OptimizerSpec:
    name: str  # sgd, momentum, adagrad, rmsprop, adam
    lr: float
    kwargs: Params = ()


