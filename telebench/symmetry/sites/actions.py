"""The exact group actions on named tensors: group elements per site, the move of the weights (and
BatchNorm's running statistics and the norms' eps), and the covariant move of gradients.

An element is a pair ``(g, g⁻¹)``: vectors ``(s, 1/s)`` for a diagonal site, ``(H, d, d)`` stacks of
per-head matrices for attention. Along an axis with codes (see ``site``), the move is ``x ↦ K ·ₐ x``
with ``K = g`` on g-coded positions and ``K = g⁻ᵀ`` on g⁻ᵀ-coded ones; since the loss is invariant,
the gradient moves by ``K⁻ᵀ`` (:func:`move` with ``covector=True``), which swaps the two roles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from telebench.symmetry.linalg import expm
from telebench.symmetry.sites.propagate import coords, flip
from telebench.symmetry.sites.site import Site, TensorAction

Element = tuple[Tensor, Tensor]
"""(g, g⁻¹) of one site."""


def algebra_shape(site: Site) -> tuple[int, ...]:
    return (site.size,) if site.diagonal else (site.heads, site.block, site.block)


def zeros(site: Site, like: Tensor) -> Tensor:
    return like.new_zeros(algebra_shape(site))


def identity(site: Site, like: Tensor) -> Element:
    if site.diagonal:
        one = like.new_ones(site.size)
        return one, one
    eye = torch.eye(site.block, dtype=like.dtype, device=like.device).expand(site.heads, -1, -1).contiguous()
    return eye, eye


def near_identity(site: Site, t: Tensor) -> Element:
    """(I + T, I − T): the element to first order in T, enough for ∂/∂T at T = 0."""
    if site.diagonal:
        return 1 + t, 1 - t
    eye = torch.eye(site.block, dtype=t.dtype, device=t.device)
    return eye + t, eye - t


def _exp_pair(t: Tensor) -> Tensor:
    """exp(T) stacked on exp(−T), inverses to rounding: telebench's fast expm for the small steps of a
    search, torch's (slower, accurate at any size) beyond unit norm per block."""
    both = torch.cat([t, -t])
    small = float(torch.linalg.matrix_norm(t).max()) <= 1.0 if t.numel() else True
    return expm(both) if small else torch.linalg.matrix_exp(both)


def element(site: Site, t: Tensor, parametrization: str = "exp") -> Element:
    """g = exp(T) with g⁻¹ = exp(−T), or g = I + T with an exact inverse (``linear``)."""
    if site.diagonal:
        return (t.exp(), (-t).exp()) if parametrization == "exp" else (1 + t, 1 / (1 + t))
    if parametrization == "exp":
        both = _exp_pair(t)
        return both[: site.heads], both[site.heads:]
    g = torch.eye(site.block, dtype=t.dtype, device=t.device) + t
    return g, torch.linalg.inv_ex(g)[0]


def elements(sites: Sequence[Site], ts: Sequence[Tensor], parametrization: str = "exp") -> list[Element]:
    """:func:`element` for every site, with one matrix exponential for all heads of each head size."""
    if parametrization != "exp":
        return [element(s, t, parametrization) for s, t in zip(sites, ts, strict=True)]
    out: list[Element | None] = [element(s, t) if s.diagonal else None for s, t in zip(sites, ts, strict=True)]
    for block in {s.block for s in sites if not s.diagonal}:
        idx = [i for i, s in enumerate(sites) if not s.diagonal and s.block == block]
        stacked = torch.cat([ts[i] for i in idx])
        both = _exp_pair(stacked)
        g, g_inv = both.split(len(stacked))
        offset = 0
        for i in idx:
            n = sites[i].heads
            out[i] = (g[offset:offset + n], g_inv[offset:offset + n])
            offset += n
    return [e for e in out if e is not None]


def compose(site: Site, a: Element, b: Element) -> Element:
    """a∘b (first b, then a)."""
    if site.diagonal:
        return a[0] * b[0], a[1] * b[1]
    return a[0] @ b[0], b[1] @ a[1]


def as_matrices(site: Site, el: Element) -> tuple[Tensor, Tensor]:
    """(g, g⁻¹) as ``size × size`` matrices: diag(s), or block-diagonal over heads (coordinate h·d + p)."""
    if site.diagonal:
        return torch.diag(el[0]), torch.diag(el[1])
    return torch.block_diag(*el[0]), torch.block_diag(*el[1])


def as_factors(site: Site, el: Element) -> tuple[Tensor, Tensor]:
    """(g, g⁻¹) as a teleport records them: vectors (s, 1/s) for a diagonal site, ``size × size``
    block-diagonal matrices otherwise (the convention of ``LayerTransform``'s factors)."""
    return (el[0], el[1]) if site.diagonal else as_matrices(site, el)


def from_matrices(site: Site, left: Tensor, right: Tensor) -> Element:
    """Inverse of :func:`as_matrices` and :func:`as_factors`, from a recorded transform."""
    n = site.size
    if site.diagonal and left.dim() == 1 and tuple(left.shape) == tuple(right.shape) == (n,):
        return left.clone(), right.clone()
    if tuple(left.shape) != (n, n) or tuple(right.shape) != (n, n):
        raise ValueError(f"the transform of the {site.kind} site at node '{site.node}' has shape "
                         f"{tuple(left.shape)}, but the site has {n} coordinates.")
    if site.diagonal:
        return torch.diagonal(left).clone(), torch.diagonal(right).clone()
    h, d = site.heads, site.block
    pick = torch.arange(h, device=left.device)
    g = left.view(h, d, h, d)[pick, :, pick, :]
    g_inv = right.view(h, d, h, d)[pick, :, pick, :]
    return g.contiguous(), g_inv.contiguous()


@dataclass(frozen=True)
class _Plan:
    """How one action's codes (after any role flip) act along its axis, precomputed once.

    Diagonal: ``pick`` indexes ``[g, g⁻¹, 1]`` per position (its factor), ``coord`` and ``sign`` give
    the coordinate and ±1 (moves by g, or by g⁻¹) of the moved positions ``moved``. Matrix: ``moved``
    lists the moved positions block by block, each block one (role, head) with its d components in
    order, and ``pick`` indexes ``[g, g⁻ᵀ]`` per block; ``sign`` is True for g-blocks and ``coord``
    the head, so the move is a gather, a batched d × d product and a scatter."""

    pick: Tensor
    moved: Tensor
    coord: Tensor
    sign: Tensor
    uniform: int = 0  # diagonal: ±1 when position i is coordinate i and all move by g (+1) or all by g⁻¹ (−1)


_PLANS: dict[tuple[int, bool, torch.device], tuple[TensorAction, _Plan]] = {}
_MAX_PLANS = 20_000


def _diagonal_plan(site: Site, codes: Tensor) -> _Plan:
    c, forward, touched = coords(codes).clamp_min(0), codes >= 0, codes != -1
    pick = torch.where(touched, torch.where(forward, c, site.size + c), torch.full_like(c, 2 * site.size))
    moved = touched.nonzero().squeeze(1)
    identity = len(c) == site.size and bool(touched.all()) and bool((c == torch.arange(len(c))).all())
    uniform = 0 if not identity else 1 if bool(forward.all()) else -1 if not bool(forward.any()) else 0
    return _Plan(pick, moved, c[moved], torch.where(forward[moved], 1, -1), uniform)


def _matrix_plan(site: Site, action: TensorAction, codes: Tensor) -> _Plan:
    pos = (codes != -1).nonzero().squeeze(1)
    c = coords(codes[pos])
    group = (codes[pos] <= -2).long() * site.heads + c // site.block  # one block per (role, head)
    order = torch.argsort(group * site.block + c % site.block)
    blocks = group[order].view(-1, site.block)
    if not bool((blocks == blocks[:, :1]).all()) or not bool(
            ((c % site.block)[order].view(-1, site.block) == torch.arange(site.block)).all()):
        raise ValueError(f"'{action.name}' does not hold whole heads of the {site.kind} site at '{site.node}'.")
    head = blocks[:, 0]
    return _Plan(head, pos[order], head % site.heads, head < site.heads)


def _plan(site: Site, action: TensorAction, covector: bool, device: torch.device) -> _Plan:
    key = (id(action), covector, device)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is action:
        return hit[1]
    codes = flip(action.codes) if covector else action.codes
    plan = _diagonal_plan(site, codes) if site.diagonal else _matrix_plan(site, action, codes)
    plan = _Plan(plan.pick.to(device), plan.moved.to(device), plan.coord.to(device), plan.sign.to(device),
                 uniform=plan.uniform)
    if len(_PLANS) >= _MAX_PLANS:  # many models over a long run: start afresh rather than grow
        _PLANS.clear()
    _PLANS[key] = (action, plan)
    return plan


def _rows(x: Tensor, axis: int) -> Tensor:
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


def _table(site: Site, el: Element) -> Tensor:
    """What a plan's ``pick`` indexes: ``[s, 1/s, 1]`` (diagonal) or ``[g, g⁻ᵀ]`` per head (matrix)."""
    if site.diagonal:
        return torch.cat([el[0], el[1], el[0].new_ones(1)])
    return torch.cat([el[0], el[1].mT])


def _act(site: Site, table: Tensor, action: TensorAction, x: Tensor, covector: bool, squared: bool) -> Tensor:
    axis = action.axis % x.dim()
    plan = _plan(site, action, covector, x.device)
    if site.diagonal:
        f = table.to(x.dtype)[plan.pick]
        power = action.power * (2 if squared else 1)
        shape = [1] * x.dim()
        shape[axis] = x.shape[axis]
        return x * (f if power == 1 else f**power).view(shape)
    if action.power != 1:
        raise ValueError(f"the {site.kind} site cannot move '{action.name}' by K ⊙ K.")
    blocks = table.to(x.dtype)[plan.pick]
    if squared:
        blocks = blocks * blocks
    rows = _rows(x, axis)
    moved = torch.bmm(blocks, rows[plan.moved].view(len(blocks), site.block, -1)).reshape(-1, rows.shape[1])
    out = rows.index_copy(0, plan.moved, moved)
    return out.view(x.movedim(axis, 0).shape).movedim(0, axis)


def act(site: Site, el: Element, action: TensorAction, x: Tensor, *, covector: bool = False,
        squared: bool = False) -> Tensor:
    """One action on one tensor: ``K ·ₐ x`` (``covector``: ``K⁻ᵀ ·ₐ x``; ``squared``: by K ⊙ K)."""
    return _act(site, _table(site, el), action, x, covector, squared)


def algebra_gradient(sites: Sequence[Site], grads: Mapping[str, Tensor], dgrads: Mapping[str, Tensor],
                     like: Tensor) -> list[Tensor]:
    """∂f/∂T at T = 0 for f of the gradients G, given E = ∂f/∂G, in closed form (no autograd).

    The gradient moves by K⁻ᵀ: to first order I + T on positions it moves by g, I − Tᵀ on those it
    moves by g⁻ᵀ. So a diagonal coordinate c collects ±Σ E ⊙ G over its positions, and a head h
    collects E_b G_bᵀ (or −G_b E_bᵀ) over its blocks b."""
    out: list[Tensor] = []
    for site in sites:
        d = zeros(site, like)
        for a in site.actions:
            if a.buffer or a.name not in grads:
                continue
            g, e = grads[a.name], dgrads[a.name]
            axis = a.axis % g.dim()
            plan = _plan(site, a, True, like.device)
            if site.diagonal and plan.uniform:  # position i is coordinate i: no gather, no scatter
                other = [i for i in range(g.dim()) if i != axis]
                d = d + plan.uniform * ((g * e).sum(other) if other else g * e)  # sum([]) would sum all
                continue
            x, e = _rows(g, axis)[plan.moved], _rows(e, axis)[plan.moved]
            if site.diagonal:
                d = d.index_add(0, plan.coord, (x * e).sum(1) * plan.sign.to(x.dtype))
            else:
                xb, eb = x.view(-1, site.block, x.shape[1]), e.view(-1, site.block, x.shape[1])
                outer = torch.bmm(eb, xb.mT)
                d = d.index_add(0, plan.coord, torch.where(plan.sign[:, None, None], outer, -outer.mT))
        out.append(d)
    return out


def move(tensors: Mapping[str, Tensor], sites: Sequence[Site], elements: Sequence[Element], *,
         covector: bool = False, squared: bool = False) -> dict[str, Tensor]:
    """Every named tensor moved by every site action on it (the others are left out of the result).
    ``covector``: gradients and other sums of gradients; ``squared`` with it: sums of squared gradients."""
    out: dict[str, Tensor] = {}
    for site, el in zip(sites, elements, strict=True):
        table = _table(site, el)
        for a in site.actions:
            if a.name in tensors and not (covector and a.buffer):
                out[a.name] = _act(site, table, a, out.get(a.name, tensors[a.name]), covector, squared)
    return out


@dataclass
class Saved:
    """What :func:`write` changed, to undo it bit for bit."""

    tensors: dict[str, Tensor]
    eps: dict[str, float]


def _tensor(model: nn.Module, name: str) -> Tensor:
    module, _, leaf = name.rpartition(".")
    owner = model.get_submodule(module)
    value = getattr(owner, leaf)
    if not isinstance(value, Tensor):
        raise ValueError(f"'{name}' is not a tensor of the model.")
    return value


def write(model: nn.Module, sites: Sequence[Site], elements: Sequence[Element]) -> Saved:
    """Move the model's tensors (and norms' eps) in place; return what is needed to restore them."""
    names = dict.fromkeys(a.name for s in sites for a in s.actions)
    live = {n: _tensor(model, n) for n in names}
    saved = Saved({n: t.detach().clone() for n, t in live.items()}, {})
    moved = move({n: t.detach() for n, t in live.items()}, sites, elements)
    with torch.no_grad():
        for n, t in moved.items():
            live[n].copy_(t)
    for site, el in zip(sites, elements, strict=True):
        for e in site.eps:
            module = model.get_submodule(e.module)
            saved.eps.setdefault(e.module, float(getattr(module, "eps")))  # noqa: B009
            c = e.code if e.code >= 0 else -e.code - 2
            f = float((el[0] if e.code >= 0 else el[1])[c]) ** 2
            setattr(module, "eps", float(getattr(module, "eps")) * f)  # noqa: B009, B010
    return saved


def restore(model: nn.Module, saved: Saved) -> None:
    with torch.no_grad():
        for n, t in saved.tensors.items():
            _tensor(model, n).copy_(t)
    for name, eps in saved.eps.items():
        setattr(model.get_submodule(name), "eps", eps)  # noqa: B010


def sample(site: Site, like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(algebra_shape(site), generator=generator, dtype=like.dtype, device=device).to(like.device)
