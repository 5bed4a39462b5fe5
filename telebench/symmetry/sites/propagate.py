"""Follow one site's move through the graph and check that it cancels everywhere it goes.

A *tag* on a node is a long tensor of codes with the node's shape (see ``site``): which site
coordinate each entry carries, and whether it moved by g or by g⁻ᵀ. Seeds tag a producer's output
channels; the rules below push tags through each op and stop them where they are absorbed:

* a Linear or Conv consuming the moved channels (its weight columns take the inverse move);
* a BatchNorm or LayerNorm whose input moved by one positive scale (norm-scale only);
* a score contraction q·k of a g-moved query with a g⁻ᵀ-moved key (attention only).

Anything else a tag reaches (the output, a skip connection's add, a non-homogeneous activation, a
rotary embedding's elementwise product) refuses the site, naming the node. ``mode.kind`` is
``diag`` (positive scales: homogeneous activations and pooling commute), ``matrix`` (GL(d) per head:
only linear data movement commutes) or ``probe`` (matrix rules, recording where a Linear's rows reach
score contractions, to find the heads of hand-written attention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, fx, nn

from telebench.symmetry.sites import ops
from telebench.symmetry.sites.graph import ModelGraph, TensorInfo

Tag = Tensor | tuple[Tensor, ...]


class Refuse(Exception):
    """The site stops here; the message says why."""


@dataclass(frozen=True)
class Mode:
    kind: str  # diag | matrix | probe
    block: int = 1  # head size, matrix mode
    absorb_norms: bool = False  # norm-scale: BatchNorm and LayerNorm absorb one positive scale


@dataclass
class Consumer:
    node: fx.Node
    module: str
    codes: Tensor  # codes of the consumed input channels (before the inverse move)


@dataclass
class Arrival:
    """Probe: the seed reached operand ``operand`` of contraction ``node``; ``rows`` are its codes along
    the contracted axis (``contracted``) or along the value axis, one row per batch position."""

    node: fx.Node
    operand: int
    rows: Tensor
    contracted: bool


@dataclass
class Flow:
    consumers: list[Consumer] = field(default_factory=list)
    norms: list[Consumer] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    paired: list[fx.Node] = field(default_factory=list)
    refusal: tuple[fx.Node, str] | None = None


def coords(codes: Tensor) -> Tensor:
    return torch.where(codes >= 0, codes, -codes - 2)


def flip(codes: Tensor) -> Tensor:
    """g ↔ g⁻ᵀ: the codes of what absorbs a move (a consumer's columns take the inverse transpose)."""
    return torch.where(codes == -1, codes, -codes - 2)


def along(codes: Tensor, shape: tuple[int, ...], axis: int) -> Tensor:
    """Codes per position along ``axis``, broadcast to ``shape``."""
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return codes.view(view).expand(shape)


def _constant(idx: Tensor, axes: list[int]) -> bool:
    ref = idx
    for a in axes:
        ref = ref.narrow(a, 0, 1)
    return bool((idx == ref).all())


def _per(idx: Tensor, axis: int, what: str) -> Tensor:
    """The codes along ``axis``, which must not change along any other axis."""
    axis %= idx.dim()
    if not _constant(idx, [a for a in range(idx.dim()) if a != axis]):
        raise Refuse(f"the moved {what} are not the same at every position, so {{label}} cannot absorb them")
    return idx.movedim(axis, -1).reshape(-1, idx.shape[axis])[0]


def _blocks(rows: Tensor, block: int, what: str) -> None:
    """Matrix mode: each row (one batch position) holds whole heads, each coordinate at most once."""
    for row in rows:
        tagged = row[row != -1]
        if tagged.numel() == 0:
            continue
        c = coords(tagged)
        heads = torch.unique(c // block)
        if c.numel() != heads.numel() * block or torch.unique(c).numel() != c.numel():
            raise Refuse(f"{what} do not hold whole heads of size {block} once each, so GL({block}) does not commute")


def _normalise(tag: Any) -> Tag | None:
    if isinstance(tag, Tensor):
        return None if bool((tag == -1).all()) else tag
    if isinstance(tag, tuple | list):
        items = tuple(t for t in tag if isinstance(t, Tensor))
        if len(items) != len(tag) or all(bool((t == -1).all()) for t in items):
            return None
        return items
    return None


def _materialise(graph: ModelGraph, node: fx.Node, tags: dict[fx.Node, Tag]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The node's arguments with moved tensors replaced by their codes and other tensors by -1 codes."""

    def value(n: fx.Node) -> Any:
        if n in tags:
            return tags[n]
        info = graph.values.get(n)
        if isinstance(info, TensorInfo):
            return torch.full(info.shape, -1, dtype=torch.long)
        if isinstance(info, tuple) and any(isinstance(i, TensorInfo) for i in info):
            return tuple(torch.full(i.shape, -1, dtype=torch.long) if isinstance(i, TensorInfo) else i for i in info)
        return info

    args = fx.node.map_arg(node.args, value)
    kwargs = fx.node.map_arg(node.kwargs, value)
    return tuple(args), dict(kwargs)


def _movement(graph: ModelGraph, node: fx.Node, tags: dict[fx.Node, Tag]) -> Tag | None:
    if node.target is ops.GETITEM_FN and len(node.args) > 1:
        index = node.args[1]
        nodes = index if isinstance(index, tuple | list) else (index,)
        if any(isinstance(n, fx.Node) and isinstance(graph.values.get(n), TensorInfo) for n in nodes):
            raise Refuse("indexes the moved tensor with a tensor, which telebench does not follow")
    args, kwargs = _materialise(graph, node, tags)
    if node.op == "call_method":
        out = getattr(args[0], str(node.target))(*args[1:], **kwargs)
    elif node.op == "call_module":
        out = graph.module(node)(*args, **kwargs)
    else:
        target: Any = node.target
        out = target(*args, **kwargs)
    return _normalise(out)


def _tensor_tag(tags: dict[fx.Node, Tag], arg: Any) -> Tensor | None:
    if isinstance(arg, fx.Node) and arg in tags:
        tag = tags[arg]
        if not isinstance(tag, Tensor):
            raise Refuse("uses a tuple of moved tensors as one tensor")
        return tag
    return None


def _other_varies(graph: ModelGraph, other: Any, out: Tensor) -> list[int]:
    """The axes of ``out`` along which an unmoved operand ``other`` varies (after broadcasting)."""
    if not isinstance(other, fx.Node):
        return []
    info = graph.values.get(other)
    if not isinstance(info, TensorInfo):
        return []
    shape = (1,) * (out.dim() - len(info.shape)) + info.shape
    return [a for a, n in enumerate(shape) if n > 1]


def _arith(graph: ModelGraph, node: fx.Node, tags: dict[fx.Node, Tag], mode: Mode, cat: str) -> Tag | None:
    shape = graph.shape(node)
    a = node.args[0] if node.args else node.kwargs.get("input")
    b = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
    ta, tb = _tensor_tag(tags, a), _tensor_tag(tags, b)
    if cat == ops.NEG:
        return ta
    if cat == ops.ADD:
        if ta is None or tb is None:
            raise Refuse("adds the moved tensor to one the move leaves unchanged (a skip connection?), "
                         "so the sum is neither moved nor unchanged")
        if not bool((torch.broadcast_to(ta, shape) == torch.broadcast_to(tb, shape)).all()):
            raise Refuse("adds two tensors moved differently")
        return torch.broadcast_to(ta, shape)
    if ta is not None and tb is not None:
        raise Refuse("multiplies two moved tensors together, which is not linear in the move")
    if cat == ops.DIV and ta is None:
        raise Refuse("divides by the moved tensor")
    moved, other = (ta, b) if ta is not None else (tb, a)
    assert moved is not None
    out = torch.broadcast_to(moved, shape)
    if mode.kind != "diag":
        varying = _other_varies(graph, other, out)
        if not _constant(out, varying):
            raise Refuse("multiplies the moved features by a tensor that varies along the head dimension "
                         "(a rotary position embedding?), which commutes with no general GL(d_head)")
    return out


def _reduce(node: fx.Node, tag: Tensor, mode: Mode, cat: str, shape: tuple[int, ...]) -> Tensor:
    if cat == ops.MAX_REDUCE and mode.kind != "diag":
        raise Refuse("takes a maximum over the moved features, which is not linear")
    dims: Any = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    axes = list(range(tag.dim())) if dims is None else [d % tag.dim() for d in (
        dims if isinstance(dims, tuple | list) else (dims,))]
    if not isinstance(dims, int | tuple | list | type(None)) or not _constant(tag, axes):
        raise Refuse("sums or averages across the moved channels, which mixes their scales")
    keep = tag
    for a in axes:
        keep = keep.narrow(a, 0, 1)
    return keep.reshape(shape)  # the reduced axes have size 1 now: the output's shape, with or without keepdim


def _pool(tag: Tensor, rank: int, mode: Mode, shape: tuple[int, ...]) -> Tensor:
    if mode.kind != "diag":
        raise Refuse("pools the moved features, which commutes only with positive per-channel scales")
    spatial = list(range(tag.dim() - rank, tag.dim()))
    if not _constant(tag, spatial):
        raise Refuse("pools across the moved channels")
    keep = tag
    for a in spatial:
        keep = keep.narrow(a, 0, 1)
    return keep.expand(shape)


def _homogeneous(mode: Mode) -> None:
    if mode.kind != "diag":
        raise Refuse("is not linear, so it commutes with positive scales only, not with GL(d_head)")


def _contract_rows(ta: Tensor, tb: Tensor, batch: torch.Size) -> tuple[Tensor, Tensor]:
    """Codes along the contracted axis of q (last) and kᵀ (second to last), one row per batch position."""
    if not _constant(ta, [ta.dim() - 2]) or not _constant(tb, [tb.dim() - 1]):
        raise Refuse("moves the contraction's operands along their free axes as well")
    ra, rb = ta[..., 0, :], tb[..., :, 0]
    k = ra.shape[-1]
    return torch.broadcast_to(ra, (*batch, k)).reshape(-1, k), torch.broadcast_to(rb, (*batch, k)).reshape(-1, k)


def pair(ra: Tensor, rb: Tensor, mode: Mode) -> None:
    """q·k is unchanged when each contracted position pairs a g-moved with a g⁻ᵀ-moved coordinate."""
    if not bool(((ra == -1) == (rb == -1)).all()):
        raise Refuse("contracts moved features with features the move leaves unchanged")
    tagged = ra != -1
    same = coords(ra[tagged]) == coords(rb[tagged])
    opposite = (ra[tagged] >= 0) != (rb[tagged] >= 0)
    if not bool((same & opposite).all()):
        raise Refuse("contracts two moved tensors that are not a query moved by A and a key moved by A⁻ᵀ")
    if mode.kind == "matrix":
        _blocks(ra, mode.block, "the contracted query features")


def _matmul(graph: ModelGraph, node: fx.Node, tags: dict[fx.Node, Tag], mode: Mode, flow: Flow) -> Tag | None:
    a, b = node.args[0], node.args[1]
    ta, tb = _tensor_tag(tags, a), _tensor_tag(tags, b)
    sa, sb = graph.shape(a), graph.shape(b)  # type: ignore[arg-type]
    if len(sa) < 2 or len(sb) < 2:
        raise Refuse("is a matrix-vector product, which telebench does not follow")
    batch = torch.broadcast_shapes(sa[:-2], sb[:-2])
    shape = graph.shape(node)
    a_contracted = ta is not None and not _constant(ta, [ta.dim() - 1])
    b_contracted = tb is not None and not _constant(tb, [tb.dim() - 2])
    if a_contracted or b_contracted:
        if mode.kind == "probe":
            for operand, t, contracted in ((0, ta, a_contracted), (1, tb, b_contracted)):
                if t is not None and contracted:
                    rows = t[..., 0, :] if operand == 0 else t[..., :, 0]
                    flow.arrivals.append(Arrival(node, operand, torch.broadcast_to(
                        rows, (*batch, rows.shape[-1])).reshape(-1, rows.shape[-1]), True))
            return None
        if ta is None or tb is None:
            raise Refuse("contracts the moved features with a tensor the move leaves unchanged")
        pair(*_contract_rows(ta, tb, batch), mode)
        flow.paired.append(node)
        return None
    if ta is not None and tb is not None:
        raise Refuse("multiplies two moved tensors together, which is not linear in the move")
    if ta is not None:
        return torch.broadcast_to(ta[..., :, :1], shape)
    assert tb is not None
    rows = torch.broadcast_to(tb[..., 0, :], (*batch, tb.shape[-1])).reshape(-1, tb.shape[-1])
    _pass_rows(node, 1, rows, mode, flow)
    return torch.broadcast_to(tb[..., :1, :], shape)


def _pass_rows(node: fx.Node, operand: int, rows: Tensor, mode: Mode, flow: Flow) -> None:
    if mode.kind == "probe":
        flow.arrivals.append(Arrival(node, operand, rows, False))
    elif mode.kind == "matrix":
        _blocks(rows, mode.block, "the values at each attention matrix")


def _sdpa(graph: ModelGraph, node: fx.Node, tags: dict[fx.Node, Tag], mode: Mode, flow: Flow) -> Tag | None:
    names = ("query", "key", "value", "attn_mask")
    args = [node.args[i] if len(node.args) > i else node.kwargs.get(n) for i, n in enumerate(names)]
    tq, tk, tv = (_tensor_tag(tags, x) for x in args[:3])
    if _tensor_tag(tags, args[3]) is not None:
        raise Refuse("uses the moved tensor as an attention mask")
    shape = graph.shape(node)
    batch = torch.Size(shape[:-2])
    if tq is not None or tk is not None:
        if mode.kind == "probe":
            for operand, t in ((0, tq), (1, tk)):
                if t is not None and _constant(t, [t.dim() - 2]):
                    rows = torch.broadcast_to(t[..., 0, :], (*batch, t.shape[-1])).reshape(-1, t.shape[-1])
                    flow.arrivals.append(Arrival(node, operand, rows, True))
        else:
            if tq is None or tk is None:
                raise Refuse("contracts the moved features with a tensor the move leaves unchanged")
            pair(*_contract_rows(tq, tk.transpose(-1, -2), batch), mode)
            flow.paired.append(node)
    if tv is None:
        return None
    if not _constant(tv, [tv.dim() - 2]):
        raise Refuse("moves the values differently at different key positions")
    _pass_rows(node, 2, torch.broadcast_to(tv[..., 0, :], (*batch, tv.shape[-1])).reshape(-1, tv.shape[-1]), mode, flow)
    return torch.broadcast_to(tv[..., :1, :], shape)


def _consume(graph: ModelGraph, node: fx.Node, module: nn.Module, tag: Tensor, mode: Mode, flow: Flow) -> None:
    if isinstance(module, nn.Linear):
        axis = tag.dim() - 1
    else:
        if getattr(module, "groups", 1) != 1:
            raise Refuse("is a grouped convolution, whose weight columns are shared across groups")
        axis = tag.dim() - ops.conv_rank(module) - 1
    codes = _per(tag, axis, "input channels")
    if mode.kind == "matrix":
        _blocks(codes[None], mode.block, "the consumed features")
    flow.consumers.append(Consumer(node, str(node.target), codes))


def _norm(node: fx.Node, module: nn.Module, tag: Tensor, mode: Mode, flow: Flow) -> None:
    if not mode.absorb_norms or mode.kind != "diag":
        raise Refuse("normalises the moved channels: with eps > 0 it is invariant only to one positive scale "
                     "shared by every channel (eps scaled with it), which is the norm-scale group")
    if isinstance(module, nn.LayerNorm):
        codes = tag.reshape(-1)[:1]
        if not bool((tag == codes[0]).all()):
            raise Refuse("normalises features moved by different scales; LayerNorm absorbs only one shared scale")
    else:
        codes = _per(tag, 1, "channels")
        eps = float(getattr(module, "eps", 0.0))
        if eps != 0 and not bool((codes == codes[0]).all()):
            raise Refuse("normalises channels moved by different scales; with eps > 0 BatchNorm absorbs one shared scale")
    if bool((codes == -1).any()) and isinstance(module, nn.LayerNorm):
        raise Refuse("normalises a vector only part of which moved")
    flow.norms.append(Consumer(node, str(node.target), codes))


def _module_rule(graph: ModelGraph, node: fx.Node, tags: dict[fx.Node, Tag], mode: Mode, flow: Flow) -> Tag | None:
    module = graph.module(node)
    if isinstance(module, ops.MOVEMENT_MODULES):
        return _movement(graph, node, tags)
    tag = _tensor_tag(tags, node.args[0] if node.args else None)
    if tag is None or len(node.all_input_nodes) != 1:
        raise Refuse(f"{type(module).__name__} takes several inputs; telebench follows a move only into "
                     "single-input modules it knows")
    if isinstance(module, ops.HOMOGENEOUS_MODULES):
        _homogeneous(mode)
        return tag
    if type(module) in ops.POOL_MODULES:
        if getattr(module, "return_indices", False):
            raise Refuse("returns pooling indices")
        return _pool(tag, ops.pool_rank(node, module), mode, graph.shape(node))
    if isinstance(module, ops.CONSUMERS):
        _consume(graph, node, module, tag, mode, flow)
        return None
    if isinstance(module, (*ops.BATCH_NORMS, nn.LayerNorm)):
        _norm(node, module, tag, mode, flow)
        return None
    raise Refuse(f"{type(module).__name__} is not known to commute with the move")


def _rule(graph: ModelGraph, node: fx.Node, tags: dict[fx.Node, Tag], mode: Mode, flow: Flow) -> Tag | None:
    if node.op == "output":
        raise Refuse("reaches the model's output, which the move would change")
    if node.op == "call_module":
        return _module_rule(graph, node, tags, mode, flow)
    cat = ops.category(node)
    if cat == ops.META:
        return None
    if cat == ops.MOVEMENT:
        return _movement(graph, node, tags)
    if cat == ops.CAST:
        return _tensor_tag(tags, node.args[0])
    if cat in (ops.ADD, ops.MUL, ops.DIV, ops.NEG):
        return _arith(graph, node, tags, mode, cat)
    if cat == ops.MATMUL:
        return _matmul(graph, node, tags, mode, flow)
    if cat == ops.SDPA:
        return _sdpa(graph, node, tags, mode, flow)
    tag = _tensor_tag(tags, node.args[0] if node.args else None)
    if tag is None:
        raise Refuse("receives the moved tensor in an argument telebench does not follow")
    if cat == ops.HOMOGENEOUS:
        _homogeneous(mode)
        return tag
    if cat == ops.POOL:
        return _pool(tag, ops.pool_rank(node, None), mode, graph.shape(node))
    if cat in (ops.REDUCE, ops.MAX_REDUCE):
        return _reduce(node, tag, mode, cat, graph.shape(node))
    raise Refuse("is not known to commute with the move (not positively homogeneous, or not linear)")


def propagate(graph: ModelGraph, seeds: dict[fx.Node, Tensor], mode: Mode) -> Flow:
    """Push the seeds' tags through the graph in topological order; stop at the first refusal."""
    tags: dict[fx.Node, Tag] = dict(seeds)
    flow = Flow()
    for node in graph.nodes:
        if node in seeds or not any(a in tags for a in node.all_input_nodes):
            continue
        try:
            out = _rule(graph, node, tags, mode, flow)
        except Refuse as refusal:
            flow.refusal = (node, str(refusal).replace("{label}", "it"))
            return flow
        if out is not None:
            tags[node] = out
    return flow
