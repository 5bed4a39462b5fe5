"""The dataset registry: every dataset a suite may name, its options, and `load_dataset`.

`shape` and `sizes` answer from the params alone, so a suite is validated (model widths, batch
sizes) without loading any data; the loaders live in the modules for each kind of dataset.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from telebench.errors import UserError
from telebench.training import image_datasets as images
from telebench.training import sequence_datasets as sequences
from telebench.training import synthetic_datasets as synthetic
from telebench.training.dataset_bundle import CLASSIFICATION, REGRESSION, DatasetBundle
from telebench.training.dataset_params import SEED_PARAM, Param, count_param, image_params
from telebench.training.specs import DatasetSpec, Params, thaw


@dataclass(frozen=True, eq=False)
class DatasetInfo:
    """A registry entry: what a dataset is, which params it takes, and how to load it.
    `shape` and `sizes` answer from the params alone, so a suite is validated without loading data."""

    name: str
    task: str
    description: str
    params: Mapping[str, Param]
    shape: Callable[[dict[str, Any]], tuple[int, int]]  # resolved params -> (n_features, n_outputs)
    sizes: Callable[[dict[str, Any]], tuple[int, int, int]]  # resolved params -> (n_train, n_val, n_test)
    loader: Callable[[dict[str, Any], str | None], DatasetBundle]
    image: tuple[int, int, int] | None = None  # (C, H, W) of an image dataset's flattened rows
    tokens: Callable[[dict[str, Any]], tuple[int, int]] | None = None  # token ids: resolved params -> (vocab, length)

    @property
    def defaults(self) -> dict[str, Any]:
        return {key: param.default for key, param in self.params.items()}

    def resolve(self, params: Mapping[str, Any] | Params | None = None) -> dict[str, Any]:
        """Defaults overlaid with `params`, each checked; an unknown key names the allowed ones."""
        given = thaw(params) if isinstance(params, tuple) else dict(params or {})
        for key in given:
            if key not in self.params:
                near = difflib.get_close_matches(key, list(self.params), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise UserError(
                    f"dataset {self.name!r} has no parameter {key!r}{hint}; allowed: {', '.join(self.params)}."
                )
        resolved = {
            key: param.check(self.name, key, given.get(key, param.default))
            for key, param in self.params.items()
        }
        self.sizes(resolved)  # cross-parameter checks (e.g. n_train + n_val fits the file)
        return resolved

    def n_features(self, params: Mapping[str, Any] | Params | None = None) -> int:
        return self.shape(self.resolve(params))[0]

    def n_outputs(self, params: Mapping[str, Any] | Params | None = None) -> int:
        return self.shape(self.resolve(params))[1]


def _fixed_shape(n_features: int, n_outputs: int) -> Callable[[dict[str, Any]], tuple[int, int]]:
    return lambda p: (n_features, n_outputs)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "synthetic-regression",
            REGRESSION,
            "uniform [0,1) inputs; random-teacher (or uniform) targets",
            {
                "n_train": count_param(1024),
                "n_val": count_param(256),
                "n_features": count_param(16),
                "n_outputs": count_param(4),
                "noise": Param(0.1, float, minimum=0.0),
                "targets": Param("teacher", str, choices=("teacher", "uniform")),
                "seed": SEED_PARAM,
            },
            lambda p: (p["n_features"], p["n_outputs"]),
            lambda p: (p["n_train"], p["n_val"], 0),
            synthetic.load_synthetic_regression,
        ),
        DatasetInfo(
            "synthetic-classification",
            CLASSIFICATION,
            "Gaussian inputs labelled by a random teacher network",
            {
                "n_train": count_param(2048),
                "n_val": count_param(512),
                "n_features": count_param(20),
                "n_classes": count_param(5, minimum=2),
                "seed": SEED_PARAM,
            },
            lambda p: (p["n_features"], p["n_classes"]),
            lambda p: (p["n_train"], p["n_val"], 0),
            synthetic.load_synthetic_classification,
        ),
        DatasetInfo(
            "digits",
            CLASSIFICATION,
            "scikit-learn's bundled 8x8 handwritten digits (1797 images)",
            {
                "val_fraction": Param(0.2, float, minimum=0.0, below=1.0),
                "test_fraction": Param(0.1, float, minimum=0.0, below=1.0),
                "split_seed": SEED_PARAM,
            },
            _fixed_shape(64, 10),
            images.digits_sizes,
            images.load_sklearn_digits,
            image=(1, 8, 8),
        ),
        DatasetInfo(
            "fashion-mnist",
            CLASSIFICATION,
            "Fashion-MNIST 28x28 (Debian dataset-fashion-mnist or a torchvision root)",
            image_params(50_000, 10_000, 10_000),
            _fixed_shape(784, 10),
            images.pool_sizes("fashion-mnist", 60_000, 10_000),
            images.load_fashion_mnist,
            image=(1, 28, 28),
        ),
        DatasetInfo(
            "mnist",
            CLASSIFICATION,
            "MNIST 28x28 from a torchvision root",
            image_params(50_000, 10_000, 10_000),
            _fixed_shape(784, 10),
            images.pool_sizes("mnist", 60_000, 10_000),
            images.load_mnist,
            image=(1, 28, 28),
        ),
        DatasetInfo(
            "cifar10",
            CLASSIFICATION,
            "CIFAR-10 32x32x3 from a torchvision root, flattened",
            image_params(45_000, 5_000, 10_000),
            _fixed_shape(3072, 10),
            images.pool_sizes("cifar10", 50_000, 10_000),
            images.load_cifar10,
            image=(3, 32, 32),
        ),
        DatasetInfo(
            "modular-addition",
            CLASSIFICATION,
            "every equation a+b=c (mod p) as token ids [a, b, =], generated (Power et al. 2022)",
            {
                "modulus": count_param(59, minimum=2),
                "operation": Param("add", str, choices=sequences.OPERATIONS),
                "train_fraction": Param(0.5, float, minimum=0.0, below=1.0),
                "val_fraction": Param(0.25, float, minimum=0.0, below=1.0),
                "split_seed": SEED_PARAM,
            },
            sequences.modular_shape,
            sequences.modular_sizes,
            sequences.load_modular,
            tokens=sequences.modular_tokens,
        ),
    )
}


def dataset_names() -> list[str]:
    return list(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for `name`, or a UserError that suggests the nearest name."""
    info = DATASETS.get(name)
    if info is None:
        near = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise UserError(f"dataset {name!r} is unknown{hint}; use one of {', '.join(DATASETS)}.")
    return info


def dataset_shape(name: str, params: Mapping[str, Any] | Params | None = None) -> tuple[int, int]:
    """(n_features, n_outputs) from the params alone, without loading, for suite validation."""
    info = dataset_info(name)
    return info.shape(info.resolve(params))


def dataset_sizes(name: str, params: Mapping[str, Any] | Params | None = None) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) from the params alone, e.g. to reject a teleport batch larger than the data."""
    info = dataset_info(name)
    return info.sizes(info.resolve(params))


def dataset_inputs(name: str, params: Mapping[str, Any] | Params | None = None) -> dict[str, Any]:
    """What one input row is, from the params alone: ``{"kind": "features"}``, ``{"kind": "image",
    "shape": (C, H, W)}`` or ``{"kind": "tokens", "vocab": V, "length": L}``."""
    info = dataset_info(name)
    if info.tokens is not None:
        vocab, length = info.tokens(info.resolve(params))
        return {"kind": "tokens", "vocab": vocab, "length": length}
    if info.image is not None:
        return {"kind": "image", "shape": info.image}
    return {"kind": "features"}


def load_dataset(spec: DatasetSpec, data_root: str | None = None) -> DatasetBundle:
    """Load `spec` on the CPU (call `.to(device)` after). Missing files raise a UserError naming the fix."""
    info = dataset_info(spec.name)
    return info.loader(info.resolve(spec.params), data_root)
