"""The live objects a profile times: a model, a real teleport batch, a training batch and three operations.

The three operations are what a teleport is weighed against (DESIGN.md §3, "Cost"):

* ``teleport()``: one teleport with the subject's settings, always from the same starting weights
  (``restore()`` puts them back, outside any timed span), so every measured teleport does the same work;
* ``gradient()``: one forward and backward pass on the teleport batch, the unit of "gradient evaluations";
* ``train_step()``: one forward, backward and optimizer step on a training batch, on a separate copy of
  the model, the unit of the break-even point.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from telebench.profile.subject import ProfileSubject
from telebench.symmetry import TeleportRecord, teleport
from telebench.training.batches import BatchStream
from telebench.training.dataset_bundle import DatasetBundle
from telebench.training.datasets import load_dataset
from telebench.training.devices import resolve_device
from telebench.training.evaluation import loss_fn_for
from telebench.training.models import build_mlp
from telebench.training.optimizers import make_optimizer
from telebench.training.step import optimizer_step

LossFn = Callable[[Tensor, Tensor], Tensor]


def load_data(subject: ProfileSubject, data_root: str | None = None) -> DatasetBundle:
    """The subject's dataset, on its device (whole tensors: batches are slices, as in the training loop)."""
    return load_dataset(subject.dataset, data_root).to(resolve_device(subject.device))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Workload:
    subject: ProfileSubject
    device: torch.device
    model: nn.Sequential
    inputs: Tensor  # the teleport batch, also the gradient-evaluation batch
    labels: Tensor
    train_inputs: Tensor
    train_labels: Tensor
    loss_fn: LossFn
    train_model: nn.Sequential
    optimizer: torch.optim.Optimizer
    start: list[Tensor] = field(default_factory=list)
    last_record: TeleportRecord | None = None

    @classmethod
    def build(cls, subject: ProfileSubject, data: DatasetBundle) -> Workload:
        """Seeded model and batches: the first teleport batch and the first training batch a trial of this
        seed would draw from the training split."""
        device = resolve_device(subject.device)
        model = build_mlp(subject.model, seed=subject.seed, device=device)
        x, y = BatchStream(data.x_train, data.y_train, subject.teleport.batch_size, seed=subject.seed).next()
        xt, yt = BatchStream(data.x_train, data.y_train, subject.train_batch, seed=subject.seed + 1).next()
        train_model = copy.deepcopy(model)
        return cls(
            subject=subject,
            device=device,
            model=model,
            inputs=x,
            labels=y,
            train_inputs=xt,
            train_labels=yt,
            loss_fn=loss_fn_for(data.task),
            train_model=train_model,
            optimizer=make_optimizer(subject.optimizer, train_model.parameters()),
            start=[p.detach().clone() for p in model.parameters()],
        )

    def restore(self) -> None:
        """Put the starting weights back (the teleport moved them in place)."""
        with torch.no_grad():
            for param, saved in zip(self.model.parameters(), self.start, strict=True):
                param.copy_(saved)

    def teleport(self) -> TeleportRecord:
        self.last_record = teleport(
            self.model, self.inputs, self.labels, self.loss_fn, **self.subject.teleport.search_options()
        )
        return self.last_record

    def gradient(self) -> None:
        self.model.zero_grad(set_to_none=True)
        self.loss_fn(self.model(self.inputs), self.labels).backward()

    def train_step(self) -> None:
        optimizer_step(self.train_model, self.optimizer, self.loss_fn, self.train_inputs, self.train_labels)

    def synchronize(self) -> None:
        synchronize(self.device)

    def warm_up(self, rounds: int) -> None:
        """Untimed rounds of all three operations: library initialisation (cuBLAS, cuDNN, the allocator's
        first blocks, lazy imports) must not land in a measurement."""
        for _ in range(rounds):
            self.restore()
            self.teleport()
            self.gradient()
            self.train_step()
        self.restore()
        self.synchronize()
