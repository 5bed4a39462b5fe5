"""Optimizer-state transport: carry an optimizer's state through the group element a teleport applied.

A teleport moves the weights of Linear layer m as ``W_m' = P_m W_m Q_m`` and ``b_m' = P_m b_m``, with
``P_m = left`` of hidden layer m (identity for the output layer) and ``Q_m = right`` of hidden layer
m-1 (identity for the first layer). For an exact group the loss is invariant, so the gradient moves
covariantly, ``G' = P⁻ᵀ G Q⁻ᵀ``, and each piece of optimizer state is mapped by what it is made of:

* covector (a sum of gradients: SGD's momentum buffer, Adam's exp_avg, RMSprop's grad_avg):
  ``X' = P⁻ᵀ X Q⁻ᵀ``, exact for every group whose action is exact;
* second moment (a sum of squared gradients: AdaGrad's sum, RMSprop's square_avg, Adam's exp_avg_sq
  and max_exp_avg_sq): ``V' = (P⁻ᵀ ⊙ P⁻ᵀ) V (Q⁻ᵀ ⊙ Q⁻ᵀ)``, exact for diagonal P, Q (rescale); for dense
  P, Q it assumes uncorrelated gradient coordinates, since the state keeps no cross moments;
* normalised (a sum of gradients divided by RMSprop's denominator d: RMSprop's momentum buffer):
  ``N' = (P⁻ᵀ (N ⊙ d) Q⁻ᵀ) ⊘ d'``, unchanged (exactly) for diagonal P, Q;
* counters (``step``): kept, so bias correction and AdaGrad's lr decay carry on.

Diagonal factors arrive as vectors (``LayerTransform.left_factor``) and stay vectors: the rescale
rules are elementwise products, and a 100,000-wide layer costs no more memory than its weights.

For gl-data, ``right`` is the least-squares matrix A, not ``left⁻¹``: the teleport is treated as the
linear reparametrisation it applies to the weights (its linearisation). docs/state-transport.md
derives the rules and says exactly what "one step after the teleport" then equals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from telebench.errors import UserError
from telebench.symmetry.factors import AppliedElement, applied_factors

COVECTOR, SECOND_MOMENT, NORMALISED, KEEP = "covector", "second-moment", "normalised", "keep"

STATE_KINDS: dict[type[torch.optim.Optimizer], dict[str, str]] = {
    torch.optim.SGD: {"momentum_buffer": COVECTOR},
    torch.optim.Adagrad: {"sum": SECOND_MOMENT, "step": KEEP},
    torch.optim.RMSprop: {
        "square_avg": SECOND_MOMENT,
        "grad_avg": COVECTOR,
        "momentum_buffer": NORMALISED,
        "step": KEEP,
    },
    torch.optim.Adam: {"exp_avg": COVECTOR, "exp_avg_sq": SECOND_MOMENT, "max_exp_avg_sq": SECOND_MOMENT, "step": KEEP},
}
"""What each state entry of each supported optimizer is made of (torch's own key names)."""


GroupElement = AppliedElement  # one hidden layer's applied factors: telebench.symmetry.factors


@dataclass(frozen=True)
class Factor:
    """``M⁻ᵀ`` for one factor M of the move, kept as a vector when M is diagonal (rescale), so the
    exact rules stay elementwise products with no rounding from dense algebra. Float64 throughout."""

    inv_t: Tensor  # 1-D: the diagonal of M⁻ᵀ (= 1/diag M); 2-D: M⁻ᵀ

    @classmethod
    def of(cls, matrix: Tensor, what: str) -> Factor:
        """From a square matrix, or a vector holding a diagonal matrix's diagonal."""
        m = matrix.detach().to(torch.float64)
        if m.dim() == 1:
            inv_t = 1.0 / m
        elif m.dim() != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"{what} must be a square matrix, got shape {tuple(matrix.shape)}.")
        elif torch.equal(m, torch.diag(torch.diagonal(m))):
            inv_t = 1.0 / torch.diagonal(m)
        else:
            inv, info = torch.linalg.inv_ex(m)
            if int(info) != 0:
                raise ValueError(f"{what} is singular, so the optimizer state cannot be transported through it.")
            inv_t = inv.mT
        if not bool(torch.isfinite(inv_t).all()):
            raise ValueError(f"{what} has a non-finite inverse, so the optimizer state cannot be transported.")
        return cls(inv_t)

    @property
    def diagonal(self) -> bool:
        return self.inv_t.dim() == 1

    def rows(self, x: Tensor, squared: bool = False) -> Tensor:
        """``M⁻ᵀ x`` on the output side of a weight (its rows) or a bias; ``(M⁻ᵀ ⊙ M⁻ᵀ) x`` if squared."""
        a = self.inv_t * self.inv_t if squared else self.inv_t
        if self.diagonal:
            return a[:, None] * x if x.dim() == 2 else a * x
        return a @ x

    def cols(self, x: Tensor, squared: bool = False) -> Tensor:
        """``x M⁻ᵀ`` on the input side of a weight (its columns); ``x (M⁻ᵀ ⊙ M⁻ᵀ)`` if squared."""
        a = self.inv_t * self.inv_t if squared else self.inv_t
        return x * a if self.diagonal else x @ a


@dataclass(frozen=True)
class ParamMap:
    """How one parameter's gradient-like state moves: rows by ``left`` and, for a weight whose input
    is a hidden layer, columns by ``right``. None means the identity on that side."""

    left: Factor | None
    right: Factor | None

    @property
    def diagonal(self) -> bool:
        return all(f is None or f.diagonal for f in (self.left, self.right))

    def move(self, x: Tensor, squared: bool = False) -> Tensor:
        """``P⁻ᵀ x Q⁻ᵀ`` for a covector; with ``squared``, the second-moment rule (squared factors)."""
        if self.left is not None:
            x = self.left.rows(x, squared)
        if self.right is not None and x.dim() == 2:
            x = self.right.cols(x, squared)
        return x


def parameter_maps(params: Sequence[Tensor], transforms: Sequence[GroupElement]) -> dict[int, ParamMap]:
    """``id(param) → ParamMap`` for an MLP's parameters in ``model.parameters()`` order (each Linear's
    weight, then its bias if any), given one transform per hidden layer."""
    layers = _linear_layers(params)
    by_layer = {t.layer: t for t in transforms}
    if sorted(by_layer) != list(range(len(layers) - 1)):
        raise ValueError(
            f"transport needs one transform per hidden layer 0..{len(layers) - 2}, got layers {sorted(by_layer)}."
        )
    maps: dict[int, ParamMap] = {}
    for m, (w, b) in enumerate(layers):
        left = right = None
        if m in by_layer:
            factor = applied_factors(by_layer[m])[0]
            _check_size(factor, w.shape[0], f"left factor of hidden layer {m}")
            left = Factor.of(factor, f"left factor of hidden layer {m}")
        if m - 1 in by_layer:
            factor = applied_factors(by_layer[m - 1])[1]
            _check_size(factor, w.shape[1], f"right factor of hidden layer {m - 1}")
            right = Factor.of(factor, f"right factor of hidden layer {m - 1}")
        maps[id(w)] = ParamMap(left, right)
        if b is not None:
            maps[id(b)] = ParamMap(left, None)
    return maps


def _check_size(matrix: Tensor, n: int, what: str) -> None:
    if tuple(matrix.shape) not in ((n, n), (n,)):
        raise ValueError(f"{what} has shape {tuple(matrix.shape)}, but the layer has {n} units.")


def _linear_layers(params: Sequence[Tensor]) -> list[tuple[Tensor, Tensor | None]]:
    """Group ``model.parameters()`` of a Sequential MLP into (weight, bias) pairs by shape."""
    layers: list[tuple[Tensor, Tensor | None]] = []
    for position, p in enumerate(params):
        if p.dim() == 2:
            layers.append((p, None))
        elif p.dim() == 1 and layers and layers[-1][1] is None and p.shape[0] == layers[-1][0].shape[0]:
            layers[-1] = (layers[-1][0], p)
        else:
            raise ValueError(
                f"transport expects an MLP's parameters (each Linear's weight, then its bias); got a tensor of "
                f"shape {tuple(p.shape)} at position {position}."
            )
    for (w, _), (w_next, _) in zip(layers, layers[1:], strict=False):
        if w_next.shape[1] != w.shape[0]:
            raise ValueError(f"consecutive weights of shapes {tuple(w.shape)} and {tuple(w_next.shape)} do not chain.")
    return layers


def _rmsprop_denominator(state: dict[str, Tensor]) -> Tensor:
    """RMSprop's denominator without eps: √(square_avg − grad_avg²) (centered) or √square_avg."""
    v = state["square_avg"].to(torch.float64)
    if "grad_avg" in state:
        v = v - state["grad_avg"].to(torch.float64) ** 2
    return v.clamp_min(0.0).sqrt()


def _transport_param(kinds: dict[str, str], state: dict[str, Tensor], pmap: ParamMap) -> dict[str, Tensor]:
    """The new values of one parameter's state entries, all computed from the old ones."""
    new: dict[str, Tensor] = {}
    for key, value in state.items():
        kind = kinds[key]
        if kind == KEEP or value is None:
            continue
        x = value.to(torch.float64)
        if kind == COVECTOR:
            new[key] = pmap.move(x)
        elif kind == SECOND_MOMENT:
            new[key] = pmap.move(x, squared=True)
    for key, value in state.items():
        # Diagonal factors leave normalised state exactly unchanged: skip the rounding of N ⊙ d ⊘ d'.
        if kinds[key] == NORMALISED and value is not None and not pmap.diagonal:
            old_d = _rmsprop_denominator(state)
            new_d = _rmsprop_denominator({**state, **new})
            num = pmap.move(value.to(torch.float64) * old_d)
            new[key] = torch.where(new_d > 0, num / new_d.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return new


def transport_state(
    optimizer: torch.optim.Optimizer, params: Sequence[Tensor], transforms: Sequence[GroupElement]
) -> None:
    """Map ``optimizer``'s state in place through the teleport ``transforms`` applied to ``params``.

    ``params`` are the MLP's parameters in ``model.parameters()`` order; ``transforms`` hold one
    element per hidden layer, as ``TeleportRecord.transforms`` (empty: nothing moved, nothing to do).
    Raises UserError for an optimizer whose state has no rule, ValueError for malformed transforms.
    """
    if not transforms:
        return
    kinds = next((k for cls, k in STATE_KINDS.items() if type(optimizer) is cls), None)
    if kinds is None:
        raise UserError(
            f"state_policy 'transport' has no rule for {type(optimizer).__name__}; use one of "
            f"{', '.join(c.__name__ for c in STATE_KINDS)}, or state_policy reset or keep."
        )
    maps = parameter_maps(params, transforms)
    for p, state in optimizer.state.items():
        unknown = sorted(set(state) - set(kinds))
        if unknown:
            raise UserError(
                f"state_policy 'transport' does not know {type(optimizer).__name__}'s state {unknown}; "
                "use state_policy reset or keep."
            )
        pmap = maps.get(id(p))
        if pmap is None:
            raise ValueError(f"the optimizer holds a parameter of shape {tuple(p.shape)} that is not in `params`.")
        with torch.no_grad():
            for key, value in _transport_param(kinds, state, pmap).items():
                state[key].copy_(value.to(state[key].dtype))
