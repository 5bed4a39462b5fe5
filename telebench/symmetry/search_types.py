"""What a search takes and gives: its options and its outcome (shared by the search paths)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from telebench.symmetry.architecture import Params
from telebench.symmetry.factors import Steps
from telebench.symmetry.groups import Element
from telebench.symmetry.objectives.base import Evaluation


@dataclass(frozen=True)
class SearchOptions:
    """How to search: the knobs of :func:`telebench.symmetry.teleport` that shape the K steps."""

    steps: int = 10
    lr: float = 1e-2
    direction: str = "increase"  # increase | decrease
    normalize_step: bool = False  # each step has norm exactly lr (joint over hidden layers)
    cap: float | None = None  # stop once the objective reaches this value
    parametrization: str = "exp"  # exp | linear


@dataclass
class Outcome:
    """A search's result in functional form, before anything touches the model.

    ``factors`` keeps every step's per-layer factors; the composed ones (``lefts``, ``rights``) and
    the summed Lie-algebra move (``algebra``) are formed from them when read."""

    params: Params  # the moved weights
    factors: Steps
    steps_taken: int
    loss_before: Tensor
    objective_before: Tensor
    after: Evaluation | None = None  # the objective and loss at ``params``, when the search measured them

    @property
    def lefts(self) -> Element:
        """Per hidden layer, the composed left factor g_K ⋯ g_1 (a vector for diagonal groups)."""
        return [self.factors.left(m)() for m in range(len(self.factors.widths))]

    @property
    def rights(self) -> Element:
        """Per hidden layer, the composed right factor r_1 ⋯ r_K."""
        return [self.factors.right(m)() for m in range(len(self.factors.widths))]

    @property
    def algebra(self) -> Element:
        """Σ_k T_k: the size and direction of the move in the Lie algebra."""
        return self.factors.total()


def norm(element: Element) -> Tensor:
    """Joint Frobenius norm over the hidden layers."""
    return torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in element]))


def capped(value: Tensor, settings: SearchOptions) -> bool:
    """Whether the objective already reached the cap: the only host read in the loop."""
    if settings.cap is None:
        return False
    v = float(value)
    return v >= settings.cap if settings.direction == "increase" else v <= settings.cap
