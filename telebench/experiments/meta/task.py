"""The optimizee: the paper's small regression problem, one instance per seed.

ICLR-2024 learn-to-teleport (paper-facts §5): X is 20×20, Y is 20×20, W₀ and W₁ are 20×20, all
uniform on [0, 1), and the loss is ½‖Y − W₁σ(W₀X)‖² with LeakyReLU(0.1). A seed fixes X, Y and the
initial weights together, so "unseen initialisations" means unseen seeds. Inputs and targets come
from the dataset registry (``synthetic-regression`` with ``targets: uniform``), the architecture from
``build_mlp``, so the weights live in the ``(W, b)`` layout the symmetry groups act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from telebench.symmetry.architecture import Architecture, Layer, Params, flat, parse, unflat
from telebench.training.datasets import load_dataset
from telebench.training.models import build_mlp
from telebench.training.specs import DatasetSpec, ModelSpec, freeze

INITS = ("uniform", "default")
DEVICE = "cpu"  # where every task instance lives, so where meta-training and test clocks run
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def half_sse(out: Tensor, target: Tensor) -> Tensor:
    """½‖Y − f(X)‖², the paper's loss (a sum, not a mean: its GD step size 3e-4 assumes it)."""
    return 0.5 * (out - target).square().sum()


@dataclass(frozen=True)
class TaskSpec:
    """What every instance shares; a seed picks the data and the initial weights."""

    widths: tuple[int, ...]
    activation: str = "leaky_relu"
    negative_slope: float = 0.1
    samples: int = 20  # columns of X: the batch every step and every teleport sees
    heldout: int = 200  # extra samples, only to measure how a teleport moves the loss off the batch
    init: str = "uniform"  # uniform: U[0, 1) like the paper's init_param; default: build_mlp's ±1/√fan_in
    dtype: str = "float32"

    @property
    def model(self) -> ModelSpec:
        return ModelSpec(widths=self.widths, activation=self.activation, negative_slope=self.negative_slope, bias=False)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def architecture(self) -> Architecture:
        return parse(build_mlp(self.model, seed=0, dtype=self.torch_dtype))


@dataclass(frozen=True)
class Task:
    """One instance: fixed batch, held-out samples and initial weights."""

    arch: Architecture
    x: Tensor
    y: Tensor
    x_heldout: Tensor
    y_heldout: Tensor
    init: Params
    seed: int

    def loss(self, params: Sequence[Layer]) -> Tensor:
        """The training loss on the batch, differentiable in ``params``."""
        return half_sse(self.arch.forward(params, self.x), self.y)

    def heldout_loss(self, params: Sequence[Layer]) -> Tensor:
        """The same loss per sample on held-out data, scaled to the batch size so both read alike."""
        return half_sse(self.arch.forward(params, self.x_heldout), self.y_heldout) * (len(self.x) / len(self.x_heldout))

    def loss_and_grads(self, params: Params, keep_graph: bool) -> tuple[Tensor, Params]:
        """The loss and its gradient at ``params``; the gradient is always detached.

        The gradient is what a meta-optimizer reads; like the paper and Andrychowicz et al. (2016) it
        is a constant to the meta-gradient (no second-order terms). With ``keep_graph`` the loss keeps
        its graph to ``params`` (and through them to earlier updates and teleports), so a meta-loss
        built from it can be back-propagated; otherwise both come back detached.
        """
        tensors = flat(params)
        leaves = [t if keep_graph and t.requires_grad else t.detach().requires_grad_() for t in tensors]
        with torch.enable_grad():
            loss = self.loss(unflat(leaves, params))
            grads = torch.autograd.grad(loss, leaves, retain_graph=keep_graph)
        return (loss if keep_graph else loss.detach()), unflat(list(grads), params)


def sample_task(spec: TaskSpec, seed: int, arch: Architecture | None = None) -> Task:
    """The instance for ``seed``: data from the registry, weights from ``build_mlp`` or U[0, 1)."""
    arch = arch or spec.architecture()
    dtype = spec.torch_dtype
    params = {"n_train": spec.samples, "n_val": spec.heldout, "n_features": spec.widths[0],
              "n_outputs": spec.widths[-1], "targets": "uniform", "seed": seed}
    data = load_dataset(DatasetSpec(name="synthetic-regression", params=freeze(params))).to(DEVICE, dtype)
    model = build_mlp(spec.model, seed=seed, dtype=dtype)
    if spec.init == "uniform":
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.rand(p.shape, generator=generator, dtype=torch.float64))
    init: Params = [(w.detach().clone(), None) for w, _ in parse(model).params()]
    return Task(arch, data.x_train, data.y_train, data.x_val, data.y_val, init, seed)


def flatten(params: Sequence[Layer]) -> Tensor:
    """All weights as one vector, layer by layer (what the LSTMs read and the update LSTM writes)."""
    return torch.cat([t.reshape(-1) for t in flat(params)])


def unflatten(vector: Tensor, like: Sequence[Layer]) -> Params:
    """Inverse of :func:`flatten` for weights shaped like ``like``."""
    out: list[Tensor] = []
    start = 0
    for t in flat(like):
        out.append(vector[start:start + t.numel()].reshape(t.shape))
        start += t.numel()
    return unflat(out, like)
