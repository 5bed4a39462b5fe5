"""The three shapes a per-layer factor of a teleport is stored in, and the products on them.

A factor is one hidden layer's group element ``g`` or right factor ``r`` (``W_m' = g_m W_m r_{m-1}``):

* a 1-D tensor: a diagonal matrix (rescale), never expanded to ``width × width``;
* a 2-D tensor: a dense matrix (linear, and gl-data on layers no wider than the batch);
* :class:`IdentityPlus`: ``I + c``, dense, applied without forming the identity;
* :class:`LowRank`: ``I + uᵀ·core·v`` with ``u, v`` of ``k × n`` and ``k < n`` (gl-data on layers
  wider than the batch, whose moves have rank at most twice the batch), never formed during a search.

The search keeps each step's factors; :class:`Steps` composes them (``g_K ⋯ g_1`` and ``r_1 ⋯ r_K``)
only when someone asks, e.g. an optimizer-state transport reading ``TeleportRecord.transforms``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from telebench.symmetry.linalg import addmm, eye, linear


def eye_like(t: Tensor, n: int | None = None) -> Tensor:
    return eye(t.shape[-1] if n is None else n, t.dtype, t.device)


class LowRank:
    """The ``n × n`` matrix ``I + uᵀ·core·v`` (``core`` None: the identity), kept factored. ``v`` may
    be given as a callable, formed on first use (a right factor whose ``v`` the search never needs)."""

    __slots__ = ("u", "_v", "core")

    def __init__(self, u: Tensor, v: Tensor | Callable[[], Tensor], core: Tensor | None = None) -> None:
        self.u = u  # k × n
        self._v = v  # k × n
        self.core = core  # k × k

    @property
    def v(self) -> Tensor:
        v = self._v
        if not isinstance(v, Tensor):
            v = self._v = v()
        return v

    def _mid(self, y: Tensor) -> Tensor:
        return y if self.core is None else self.core @ y

    def lmul(self, w: Tensor) -> Tensor:
        """``self @ w`` for a matrix or a vector ``w``."""
        if w.dim() == 1:
            return w + self.u.mT @ self._mid(self.v @ w)
        return torch.addmm(w, self.u.mT, self._mid(self.v @ w))

    def lmul_(self, w: Tensor) -> Tensor:
        """``self @ w`` written into ``w`` (a matrix nobody else holds): no copy of ``w``."""
        return w.addmm_(self.u.mT, self._mid(self.v @ w))

    def rmul(self, w: Tensor) -> Tensor:
        """``w @ self``."""
        wu = w @ self.u.mT
        return torch.addmm(w, wu if self.core is None else wu @ self.core, self.v)

    def rmul_t(self, z: Tensor) -> Tensor:
        """``z @ selfᵀ``."""
        zv = F.linear(z, self.v)
        return torch.addmm(z, zv if self.core is None else zv @ self.core.mT, self.u)

    def dense(self) -> Tensor:
        return torch.addmm(eye_like(self.u), self.u.mT, self._mid(self.v))

    def __repr__(self) -> str:
        return f"LowRank(n={self.u.shape[-1]}, k={self.u.shape[0]})"


@dataclass(frozen=True)
class IdentityPlus:
    """The dense matrix ``I + c``, applied as ``w + c w`` (one fused product, no identity formed)."""

    c: Tensor

    def lmul(self, w: Tensor) -> Tensor:
        return torch.addmm(w, self.c, w) if w.dim() == 2 else torch.addmv(w, self.c, w)

    def rmul(self, w: Tensor) -> Tensor:
        return torch.addmm(w, w, self.c)

    def rmul_t(self, z: Tensor, colmajor: bool = False) -> Tensor:
        return addmm(z, z, self.c.mT, colmajor)

    def dense(self) -> Tensor:
        return self.c + eye_like(self.c)


Factor = Tensor | LowRank | IdentityPlus


def lmul(f: Factor, w: Tensor) -> Tensor:
    """``f @ w`` (``w`` a weight or a bias vector)."""
    if isinstance(f, LowRank | IdentityPlus):
        return f.lmul(w)
    if f.dim() == 1:
        return f[:, None] * w if w.dim() == 2 else f * w
    return torch.mm(f, w) if w.dim() == 2 else torch.mv(f, w)


def rmul(w: Tensor, f: Factor) -> Tensor:
    """``w @ f`` (on a weight's columns)."""
    if isinstance(f, LowRank | IdentityPlus):
        return f.rmul(w)
    return w * f if f.dim() == 1 else w @ f


def rmul_t(z: Tensor, f: Factor, colmajor: bool = False) -> Tensor:
    """``z @ fᵀ`` (a batch of unit vectors, rows of ``z``, moved by ``f``); a dense result is
    column-major when ``colmajor`` (a low-rank factor acts on wide layers, kept row by row)."""
    if isinstance(f, IdentityPlus):
        return f.rmul_t(z, colmajor)
    if isinstance(f, LowRank):
        return f.rmul_t(z)
    return z * f if f.dim() == 1 else linear(z, f, None, colmajor)


def dense(f: Factor) -> Tensor:
    """The factor as stored (vector or matrix), or a low-rank one formed as a matrix."""
    return f.dense() if isinstance(f, LowRank | IdentityPlus) else f


def compose_left(factors: Sequence[Factor], like: Tensor, n: int, diagonal: bool) -> Tensor:
    """``f_K ⋯ f_1`` for factors listed in the order applied (a vector if ``diagonal``)."""
    if diagonal:
        out = like.new_ones(n)
        for f in factors:
            out = out * dense(f)
        return out
    acc: Tensor | None = None
    for f in factors:
        acc = dense(f) if acc is None else lmul(f, acc)
    return eye_like(like, n).clone() if acc is None else acc


def compose_right(factors: Sequence[Factor], like: Tensor, n: int, diagonal: bool) -> Tensor:
    """``f_1 ⋯ f_K`` for factors listed in the order applied (a vector if ``diagonal``)."""
    if diagonal:
        return compose_left(factors, like, n, True)
    acc: Tensor | None = None
    for f in factors:
        acc = dense(f) if acc is None else rmul(acc, f)
    return eye_like(like, n).clone() if acc is None else acc


def _normal(t: Tensor) -> Tensor:
    """``t``, as an ordinary tensor if a search made it in inference mode."""
    return t.clone() if t.is_inference() else t


class Lazy:
    """A value computed once, on first use (the composed factors of a teleport nobody transports
    are never formed), and always an ordinary tensor (never an inference-mode one, which could not
    be changed in place or enter autograd)."""

    def __init__(self, make: Callable[[], Tensor]) -> None:
        self._make: Callable[[], Tensor] | None = make
        self._value: Tensor | None = None

    def __call__(self) -> Tensor:
        if self._value is None:
            assert self._make is not None
            self._value, self._make = _normal(self._make()), None
        return self._value


class Steps:
    """Each step's per-layer factors of one search, composed on demand.

    ``lefts[m]`` and ``rights[m]`` list hidden layer m's group elements and right factors in the
    order the steps applied them; ``algebra[m]`` its Lie-algebra steps, either tensors or callables
    forming one (a low-rank step's ``c·AᵀB``)."""

    def __init__(self, widths: Sequence[int], like: Tensor, diagonal: bool) -> None:
        self.widths, self.like, self.diagonal = tuple(widths), like, diagonal
        self.lefts: list[list[Factor]] = [[] for _ in widths]
        self.rights: list[list[Factor]] = [[] for _ in widths]
        self.algebra: list[list[Tensor | Callable[[], Tensor]]] = [[] for _ in widths]
        # Layers whose composed factors the search formed anyway (to move the weights).
        self.known_lefts: dict[int, Tensor] = {}
        self.known_rights: dict[int, Tensor] = {}

    def left(self, m: int) -> Callable[[], Tensor]:
        """Hidden layer m's ``g_K ⋯ g_1``, composed on first call."""
        if m in self.known_lefts:
            return Lazy(lambda: self.known_lefts[m])
        return Lazy(lambda: compose_left(self.lefts[m], self.like, self.widths[m], self.diagonal))

    def right(self, m: int) -> Callable[[], Tensor]:
        """Hidden layer m's ``r_1 ⋯ r_K``, composed on first call."""
        if m in self.known_rights:
            return Lazy(lambda: self.known_rights[m])
        return Lazy(lambda: compose_right(self.rights[m], self.like, self.widths[m], self.diagonal))

    def total(self) -> list[Tensor]:
        """Σ_k T_k per hidden layer."""
        out = []
        for m, n in enumerate(self.widths):
            parts = [t() if callable(t) else t for t in self.algebra[m]]
            shape = (n,) if self.diagonal else (n, n)
            out.append(_normal(torch.stack(parts).sum(0) if parts else self.like.new_zeros(shape)))
        return out


class AppliedElement(Protocol):
    """One applied group element as a record's transforms hold it (``LayerTransform``, a site's move):
    ``left`` and ``right`` as matrices, and optionally ``left_factor`` and ``right_factor`` as stored,
    vectors for diagonal groups, which an optimizer-state transport reads so that a wide rescale never
    forms a width × width matrix."""

    @property
    def layer(self) -> int: ...

    @property
    def left(self) -> Tensor: ...

    @property
    def right(self) -> Tensor: ...


def applied_factors(t: AppliedElement) -> tuple[Tensor, Tensor]:
    """(left, right) of one applied element, as vectors where it stores diagonal ones."""
    left, right = getattr(t, "left_factor", None), getattr(t, "right_factor", None)
    return t.left if not isinstance(left, Tensor) else left, t.right if not isinstance(right, Tensor) else right
