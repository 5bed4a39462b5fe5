"""Random stand-in data for the plan probe: a dataset's shapes, task and sizes from the registry, so a
probe times real work on the trial's device without reading any file."""

from __future__ import annotations

from dataclasses import dataclass

from telebench.experiments.pairs.spec import TrialSpec
from telebench.training.dataset_bundle import DatasetBundle
from telebench.training.evaluation import TRAIN_EVAL_SIZE

STAND_IN_ROWS = 2048  # rows per split of the random stand-in data (more when a batch needs them)


@dataclass
class StandIn:
    """Random tensors of a dataset's shape on the trial's device, at most STAND_IN_ROWS per split (more
    for a larger batch), and the real row counts each evaluation's time is scaled to."""

    data: DatasetBundle
    n_train: int
    rows: tuple[int, int, int]  # real (train-loss subset, validation, test) rows of one evaluation

    def scale(self, split: int, stand_in_rows: int) -> float:
        return self.rows[split] / max(1, stand_in_rows)


def build_stand_in(spec: TrialSpec, need: int) -> StandIn:
    """Random inputs shaped as `spec`'s model reads them (features, images or token ids), at least `need`
    training rows, with the real row counts each evaluation's time is scaled to."""
    import torch

    from telebench.training.dataset_bundle import CLASSIFICATION
    from telebench.training.datasets import dataset_info
    from telebench.training.devices import resolve_device

    info = dataset_info(spec.dataset.name)
    params = info.resolve(spec.dataset.params)
    n_features, n_outputs = info.shape(params)
    n_train, n_val, n_test = info.sizes(params)
    generator = torch.Generator().manual_seed(0)

    def split(n: int, at_least: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(n, max(STAND_IN_ROWS, at_least))
        if info.tokens is not None:  # token ids, as the model reads them
            vocab, length = info.tokens(params)
            x = torch.randint(vocab, (n, length), generator=generator)
        elif spec.model.inputs == "image" and info.image is not None:
            x = torch.rand(n, *info.image, generator=generator)
        else:
            x = torch.randn(n, n_features, generator=generator)
        if info.task == CLASSIFICATION:
            return x, torch.randint(n_outputs, (n,), generator=generator)
        return x, torch.randn(n, n_outputs, generator=generator)

    (x_train, y_train), (x_val, y_val) = split(n_train, need), split(n_val)
    x_test, y_test = split(n_test) if n_test else (None, None)
    data = DatasetBundle(spec.dataset.name, info.task, x_train, y_train, x_val, y_val, x_test, y_test,
                         n_features, n_outputs).to(resolve_device(spec.device))
    return StandIn(data, n_train, (min(n_train, TRAIN_EVAL_SIZE), n_val, n_test))
