"""The loaded form of a dataset: whole train/validation(/test) tensors and the task they pose.

The datasets telebench trains on are small enough to live on the training device, so a bundle
holds plain tensors that a step slices directly instead of going through a DataLoader: the
training clock then measures training, not Python data plumbing (DESIGN §4).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclass
class DatasetBundle:
    """Train/validation(/test) tensors of one dataset. Inputs are float rows of n_features (images
    flattened; ``image_shape`` keeps their (C, H, W)) or int64 token ids (``vocab`` set, n_features the
    sequence length); labels are int64 class indices (classification) or float targets (regression)."""

    name: str
    task: str  # "classification" | "regression"
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor | None
    y_test: Tensor | None
    n_features: int
    n_outputs: int  # number of classes for classification
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) of an image dataset's flattened rows
    vocab: int | None = None  # token datasets: ids lie in [0, vocab)

    def as_images(self) -> DatasetBundle:
        """The same data with inputs shaped (N, C, H, W) for a convolutional model (views, no copy)."""
        if self.image_shape is None:
            raise ValueError(f"dataset {self.name!r} holds no images")
        shape = self.image_shape

        def view(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.reshape(len(t), *shape)

        x_train, x_val = view(self.x_train), view(self.x_val)
        assert x_train is not None and x_val is not None
        return replace(self, x_train=x_train, x_val=x_val, x_test=view(self.x_test))

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> DatasetBundle:
        """A copy on `device`; `dtype` recasts the float tensors (inputs, regression targets) only."""

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None)

        def move_optional(t: Tensor | None) -> Tensor | None:
            return None if t is None else move(t)

        return replace(
            self,
            x_train=move(self.x_train),
            y_train=move(self.y_train),
            x_val=move(self.x_val),
            y_val=move(self.y_val),
            x_test=move_optional(self.x_test),
            y_test=move_optional(self.y_test),
        )
