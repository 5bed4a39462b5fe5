"""The two meta-optimizers: an LSTM that writes weight updates and one that writes group elements.

Both follow the paper's shape, two stacked ``LSTMCell``s and a linear head (paper-facts §5), and
read the gradient of every weight. They differ from the reference code where it was fragile:

- Gradients can be preprocessed coordinate by coordinate as in Andrychowicz et al. (2016):
  (log|g|/p, sign g) for |g| ≥ e^-p, else (−1, e^p g). The paper's task starts at a loss near 5·10⁵
  and ends near 10, so raw gradients span five orders of magnitude and saturate an LSTM.
- The update LSTM comes in two designs. ``full`` is the paper's: one LSTM over the whole gradient
  vector (800 inputs, hidden 300, 800 outputs; 2.3 M parameters). ``coordinatewise`` is the
  standard learned-optimizer design: one small LSTM shared by every coordinate, run as a batch of
  800, so it learns from 800 examples per step and costs a few thousand parameters.
- The learned step size is a sigmoid in log space between the clamp bounds of the reference
  (1e-7, 5e-3), so it always has a gradient (a clamp has none outside its range); its head starts
  with zero weights and a bias that gives the arm's initial step size, so the untrained arm is
  GD at that step size (with random-direction teleports) rather than a random step-size schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

PREPROCESS = ("log-sign", "none")
DESIGNS = ("coordinatewise", "full")

State = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]
"""(h, c) of each of the two stacked cells."""


def preprocess(grad: Tensor, kind: str, p: float = 10.0) -> Tensor:
    """Per coordinate features of a flat gradient: ``n × 2`` for log-sign, ``n × 1`` for none."""
    if kind == "none":
        return grad[:, None]
    big = grad.abs() >= math.exp(-p)
    log_part = torch.where(big, grad.abs().clamp_min(math.exp(-p)).log() / p, -torch.ones_like(grad))
    sign_part = torch.where(big, grad.sign(), grad * math.exp(p))
    return torch.stack([log_part, sign_part], dim=1)


def features(kind: str) -> int:
    return 1 if kind == "none" else 2


class _TwoCells(nn.Module):
    """Two stacked LSTMCells; ``rows`` independent sequences run side by side."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.cell1 = nn.LSTMCell(inputs, hidden)
        self.cell2 = nn.LSTMCell(hidden, hidden)

    def initial_state(self, rows: int, like: Tensor) -> State:
        zero = like.new_zeros((rows, self.hidden))
        return (zero, zero), (zero, zero)

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        s1 = self.cell1(x, state[0])
        s2 = self.cell2(s1[0], state[1])
        return s2[0], (s1, s2)


def detach_state(state: State) -> State:
    """Cut the graph at a truncation point; the values carry on."""
    return tuple((h.detach(), c.detach()) for h, c in state)  # type: ignore[return-value]


class UpdateLSTM(nn.Module):
    """Gradient → weight update ``u``; the optimizee steps ``W ← W − u``."""

    def __init__(self, n_params: int, design: str = "coordinatewise", hidden: int = 20,
                 preprocessing: str = "log-sign", scale: float = 0.1) -> None:
        super().__init__()
        if design not in DESIGNS:
            raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
        self.design, self.preprocessing, self.scale, self.n_params = design, preprocessing, scale, n_params
        per_coordinate = features(preprocessing)
        if design == "full":
            self.cells = _TwoCells(n_params * per_coordinate, hidden)
            self.head = nn.Linear(hidden, n_params)
        else:
            self.cells = _TwoCells(per_coordinate, hidden)
            self.head = nn.Linear(hidden, 1)

    def initial_state(self, like: Tensor) -> State:
        return self.cells.initial_state(1 if self.design == "full" else self.n_params, like)

    def forward(self, grad: Tensor, state: State) -> tuple[Tensor, State]:
        x = preprocess(grad, self.preprocessing)
        if self.design == "full":
            x = x.reshape(1, -1)
        out, state = self.cells(x, state)
        return self.scale * self.head(out).reshape(-1), state


class TeleportLSTM(nn.Module):
    """Gradient → one Lie-algebra element per hidden layer (and optionally a step size).

    ``shapes`` are the algebra shapes of the group (``(n,)`` for rescale, ``(n, n)`` for GL groups).
    """

    def __init__(self, n_params: int, shapes: Sequence[tuple[int, ...]], hidden: int = 20,
                 preprocessing: str = "log-sign", step_size: tuple[float, float, float] | None = None) -> None:
        super().__init__()
        self.preprocessing = preprocessing
        self.shapes = [tuple(s) for s in shapes]
        self.cells = _TwoCells(n_params * features(preprocessing), hidden)
        self.head = nn.Linear(hidden, sum(math.prod(s) for s in self.shapes))
        self.step_head: nn.Linear | None = None
        if step_size is not None:
            low, high, start = step_size
            self.log_low, self.log_span = math.log(low), math.log(high) - math.log(low)
            self.step_head = nn.Linear(hidden, 1)
            with torch.no_grad():  # untrained, the step size is exactly the arm's initial one
                fraction = (math.log(start) - self.log_low) / self.log_span
                self.step_head.weight.zero_()
                self.step_head.bias.fill_(math.log(fraction / (1 - fraction)))

    def initial_state(self, like: Tensor) -> State:
        return self.cells.initial_state(1, like)

    def forward(self, grad: Tensor, state: State) -> tuple[list[Tensor], Tensor | None, State]:
        x = preprocess(grad, self.preprocessing).reshape(1, -1)
        out, state = self.cells(x, state)
        flat = self.head(out).reshape(-1)
        algebra = [part.reshape(shape) for part, shape in
                   zip(flat.split([math.prod(s) for s in self.shapes]), self.shapes, strict=True)]
        step = None
        if self.step_head is not None:
            step = torch.exp(self.log_low + self.log_span * torch.sigmoid(self.step_head(out).reshape(())))
        return algebra, step, state
