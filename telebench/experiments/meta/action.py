"""Apply a learned Lie-algebra element through telebench.symmetry's group actions, differentiably.

The reference code normalises T to ‖T‖_F = 0.01 and applies g = I + T with the first-order inverse
I − T, which the paper-facts measurements show breaks the level set. Here g = exp(T) (or I + T)
comes from :meth:`Group.element`, which returns the *exact* inverse, and the weights move by the
group's own action, so the loss on the batch is preserved up to rounding and meta-gradients flow
through the move.

Exact groups (rescale, linear) use :meth:`Group.act` directly: it is plain tensor algebra. The
gl-data group's ``act`` computes its activations detached (it serves the teleport search, which
never differentiates through them), so its action is written out here with the same formula
and the same solver (:class:`~telebench.symmetry.linalg.LeastSquares`) on live tensors; a test
checks it against ``GLDataGroup.act`` value for value.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from telebench.symmetry.architecture import Architecture, Params
from telebench.symmetry.groups import Element, Group
from telebench.symmetry.linalg import LeastSquares


def normalise(algebra: Sequence[Tensor], magnitude: float) -> Element:
    """Rescale each layer's element to Frobenius norm ``magnitude`` (the paper's ‖T‖_F = 0.01): the
    LSTM picks the direction of the move, the suite its size."""
    return [t * (magnitude / t.norm().clamp_min(1e-12)) for t in algebra]


def gl_data_act(arch: Architecture, params: Params, g: Element, inputs: Tensor) -> Params:
    """GLDataGroup's action, differentiable in both ``g`` and ``params``.

    Hidden layer m: W_m' = g_m W_m r_{m-1}, and r_m = (I + P⁺(σ(Z_m) − P))ᵀ with P = σ(g_m Z_m) the
    moved network's activations on the batch, so P r_mᵀ = σ(Z_m) whenever P has full row rank
    (batch ≤ width): the next layer then sees exactly the original activations.
    """
    moved: Params = []
    h_orig, h_moved = inputs, inputs
    right: Tensor | None = None
    for m, (w, b) in enumerate(params[:-1]):
        target = arch.activate(m, F.linear(h_orig, w, b))
        if right is not None:
            w = w @ right
        w, b = g[m] @ w, None if b is None else g[m] @ b
        p = arch.activate(m, F.linear(h_moved, w, b))
        eye = torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
        right = (eye + LeastSquares(p).solve(target - p)).mT
        moved.append((w, b))
        h_orig, h_moved = target, p
    w, b = params[-1]
    assert right is not None
    moved.append((w @ right, b))
    return moved


def act(group: Group, arch: Architecture, params: Params, algebra: Element, parametrization: str,
        inputs: Tensor) -> Params:
    """The weights moved by g = exp(T) (or I + T), with the group's exact inverse where it has one."""
    with warnings.catch_warnings():
        # telebench.symmetry.linalg.expm reads ‖T‖ with float() to pick its Taylor degree; on a T that
        # requires grad torch warns about it, harmlessly (the norm only picks the degree).
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
        g, g_inv = group.element(algebra, parametrization)
    if group.exact:
        moved, _ = group.act(arch, params, g, g_inv, None)
        return moved
    if group.name == "gl-data":
        return gl_data_act(arch, params, g, inputs)
    raise ValueError(f"no differentiable action for group {group.name!r}; use rescale, linear or gl-data.")


def relative_change(before: Tensor, after: Tensor) -> float:
    """|L(g·w) − L(w)| / |L(w)|, the invariance error of one teleport."""
    return float((after - before).abs() / before.abs().clamp_min(torch.finfo(before.dtype).tiny))
