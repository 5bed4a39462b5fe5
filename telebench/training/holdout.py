"""A calibration holdout carved from a dataset's training split, the same for every seed and arm.

Early stopping needs data that neither the gradient steps nor the reported validation loss use: the
validation split is what a suite's verdicts are measured on, so choosing weights by it would bias them.
The holdout is a seeded random subset of the training rows, its seed a hash of the dataset's own settings
(name and parameters, but not where the files live), so every seed, arm and rerun of a case carves the
same rows, on every device.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import torch
from torch import Tensor

from telebench.training.dataset_bundle import DatasetBundle
from telebench.training.specs import DatasetSpec

LOCATION_PARAMS = ("root", "download")  # where a dataset's files are found, not which rows it holds


def holdout_seed(dataset: DatasetSpec) -> int:
    """A stable seed from the dataset's name and parameters (file locations left out)."""
    params = [[k, v] for k, v in dataset.params if k not in LOCATION_PARAMS]
    blob = json.dumps([dataset.name, params], sort_keys=True, default=str)
    return int(hashlib.sha256(blob.encode()).hexdigest()[:12], 16)


def carve_holdout(bundle: DatasetBundle, size: int, seed: int) -> tuple[DatasetBundle, tuple[Tensor, Tensor]]:
    """(the bundle without `size` seeded-random training rows, those rows as (x, y)). Both keep the rows'
    original order; the indices are drawn on the CPU, so the split is the same on every device."""
    n = len(bundle.x_train)
    if not 0 < size < n:
        raise ValueError(f"a holdout of {size} must leave some of the {n} training samples of {bundle.name}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = order[:size].sort().values.to(bundle.x_train.device)
    kept = order[size:].sort().values.to(bundle.x_train.device)
    rest = replace(bundle, x_train=bundle.x_train.index_select(0, kept), y_train=bundle.y_train.index_select(0, kept))
    return rest, (bundle.x_train.index_select(0, held), bundle.y_train.index_select(0, held))
