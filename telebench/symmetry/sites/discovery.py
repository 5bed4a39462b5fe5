"""``find_symmetries``: the exact sites of a model, read from its torch.fx graph, and the near-misses.

* channel-rescale: every Conv, Linear or affine norm whose output channels reach only Linear or Conv
  layers through positively homogeneous, per-channel ops (ReLU, LeakyReLU, pooling, Flatten, Dropout);
* norm-scale: the Conv or Linear feeding a BatchNorm or LayerNorm, all its channels scaled by one
  c > 0 (the norm's eps by c², BatchNorm's running mean by c and variance by c²);
* attention (``attention``): per head, A on queries and A⁻ᵀ on keys, B on values and B⁻¹ on the
  output projection, in nn.MultiheadAttention and in hand-written q/k/v/o Linears.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import Tensor, fx, nn

from telebench.symmetry.architecture import SymmetryError
from telebench.symmetry.sites import ops
from telebench.symmetry.sites.attention import attention_sites
from telebench.symmetry.sites.build import build_site, is_producer, producer_axis, refused_at
from telebench.symmetry.sites.graph import ModelGraph, as_args, read_graph
from telebench.symmetry.sites.propagate import Mode, along, propagate
from telebench.symmetry.sites.site import (
    ATTENTION_QK,
    ATTENTION_VO,
    CHANNEL_RESCALE,
    GROUP_KINDS,
    NORM_SCALE,
    Refusal,
    Site,
    SiteSet,
)

ALIASES = {"rescale": CHANNEL_RESCALE}
MLP_ONLY = {
    "gl-data": "group 'gl-data' is MLP-only: its action is data-dependent (a least-squares fit on the teleport "
               "batch), defined for an nn.Sequential of nn.Linear layers; use 'auto' or 'channel-rescale' here",
    "linear": "group 'linear' acts on linear MLPs (an nn.Sequential of nn.Linear layers); on other models use "
              "'auto', 'channel-rescale', 'norm-scale' or 'attention'",
}


def resolve_group(group: str) -> str:
    """The site group a name asks for ('rescale' is channel-rescale here), or an error saying why not."""
    group = ALIASES.get(group, group)
    if group in MLP_ONLY:
        raise SymmetryError(MLP_ONLY[group] + ".")
    if group not in GROUP_KINDS:
        raise ValueError(f"unknown symmetry group {group!r} for a non-MLP model; choose one of {sorted(GROUP_KINDS)}.")
    return group


def rescale_sites(graph: ModelGraph) -> tuple[list[Site], list[Refusal]]:
    sites: list[Site] = []
    refused: list[Refusal] = []
    for node in graph.nodes:
        if node.op != "call_module" or not is_producer(graph.module(node)):
            continue
        module, name = graph.module(node), str(node.target)
        shape = graph.shape(node)
        axis = producer_axis(module, len(shape))
        codes = torch.arange(shape[axis])
        flow = propagate(graph, {node: along(codes, shape, axis)}, Mode("diag"))
        if flow.refusal is not None:
            refused.append(refused_at(graph, CHANNEL_RESCALE, flow, (name,)))
        elif not flow.consumers:
            refused.append(Refusal(CHANNEL_RESCALE, node.name, (name,), "no Linear or Conv consumes its channels"))
        else:
            site = build_site(graph, CHANNEL_RESCALE, node, {name: codes}, flow, shape[axis], 1)
            (sites if isinstance(site, Site) else refused).append(site)  # type: ignore[arg-type]
    return sites, refused


def _norm_producer(graph: ModelGraph, norm: fx.Node) -> fx.Node | str:
    """The Conv or Linear whose output reaches ``norm`` through homogeneous per-channel ops, or why none."""
    src = norm.args[0] if norm.args else None
    while isinstance(src, fx.Node):
        if src.op == "call_module":
            module = graph.module(src)
            if isinstance(module, ops.CONSUMERS) and getattr(module, "groups", 1) == 1:
                return src
            if isinstance(module, (*ops.HOMOGENEOUS_MODULES, nn.Identity)) or type(module) in ops.POOL_MODULES:
                src = src.args[0] if src.args else None
                continue
        elif ops.category(src) in (ops.HOMOGENEOUS, ops.POOL):
            src = src.args[0] if src.args else None
            continue
        return f"its input is {graph.label(src)}, not the output of one Conv or Linear"
    return "its input is not a tensor the graph computes"


def norm_sites(graph: ModelGraph) -> tuple[list[Site], list[Refusal]]:
    sites: list[Site] = []
    refused: list[Refusal] = []
    seen: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(graph.module(node), (*ops.BATCH_NORMS, nn.LayerNorm)):
            continue
        norm = graph.module(node)
        producer = _norm_producer(graph, node)
        if isinstance(producer, str):
            refused.append(Refusal(NORM_SCALE, node.name, (str(node.target),), producer))
            continue
        if producer in seen:
            continue
        seen.add(producer)
        shape = graph.shape(producer)
        axis = producer_axis(graph.module(producer), len(shape))
        per_channel = isinstance(norm, ops.BATCH_NORMS) and norm.eps == 0
        codes = torch.arange(shape[axis]) if per_channel else torch.zeros(shape[axis], dtype=torch.long)
        name = str(producer.target)
        flow = propagate(graph, {producer: along(codes, shape, axis)}, Mode("diag", absorb_norms=True))
        if flow.refusal is not None:
            refused.append(refused_at(graph, NORM_SCALE, flow, (name, str(node.target))))
            continue
        site = build_site(graph, NORM_SCALE, producer, {name: codes}, flow, shape[axis] if per_channel else 1, 1)
        (sites if isinstance(site, Site) else refused).append(site)  # type: ignore[arg-type]
    return sites, refused


def _disjoint(sites: list[Site]) -> tuple[list[Site], list[Refusal]]:
    """Keep sites whose moves commute, attention first: a matrix move may not share a position of a tensor
    axis with another site (diagonal moves on one axis commute). A channel-rescale of value rows is a
    diagonal part of the attention-vo group, so attention takes precedence."""
    order = {ATTENTION_QK: 0, ATTENTION_VO: 0, NORM_SCALE: 1, CHANNEL_RESCALE: 2}
    kept: list[Site] = []
    refused: list[Refusal] = []
    taken: dict[tuple[str, int], list[tuple[Tensor, Site]]] = {}
    for site in sorted(sites, key=lambda s: order[s.kind]):
        clash = next((other for a in site.actions for mask, other in taken.get((a.name, a.axis), [])
                      if bool((mask & (a.codes != -1)).any()) and not (site.diagonal and other.diagonal)), None)
        if clash is not None:
            refused.append(Refusal(site.kind, site.node, site.modules,
                                   f"moves the same tensor entries as the {clash.kind} site at node '{clash.node}'"))
            continue
        kept.append(site)
        for a in site.actions:
            taken.setdefault((a.name, a.axis), []).append((a.codes != -1, site))
    return kept, refused


def discover(graph: ModelGraph, group: str) -> SiteSet:
    kinds = GROUP_KINDS[group]
    sites: list[Site] = []
    refused: list[Refusal] = []
    if CHANNEL_RESCALE in kinds:
        s, r = rescale_sites(graph)
        sites += s
        refused += r
    if NORM_SCALE in kinds:
        s, r = norm_sites(graph)
        sites += s
        refused += r
    if ATTENTION_QK in kinds:
        s, r = attention_sites(graph)
        sites += s
        refused += r
    sites, clashes = _disjoint(sites)
    normed = {s.modules[0] for s in sites if s.kind == NORM_SCALE}  # its channel-rescale refusal says nothing new
    refused = [r for r in refused if not (r.kind == CHANNEL_RESCALE and r.modules[0] in normed)]
    return SiteSet(group, tuple(sites), tuple(refused + clashes))


def find_symmetries(model: nn.Module, example_inputs: Tensor | Sequence[Tensor], group: str = "auto") -> SiteSet:
    """The exact symmetry sites of ``model`` for ``group`` (``auto``: all of them), read from its torch.fx
    graph and one run on two rows of ``example_inputs``; ``refused`` lists the near-misses and why.

    Raises SymmetryError when torch.fx cannot trace the model or the group is MLP-only (gl-data, linear).
    Discovery leaves the model as it was (running statistics, RNG).
    """
    return discover(read_graph(model, example_inputs), resolve_group(group))


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], SiteSet]] = weakref.WeakKeyDictionary()


def cached_sites(model: nn.Module, example_inputs: Tensor | Sequence[Tensor], group: str) -> SiteSet:
    """:func:`find_symmetries`, traced once per model, group, input shape and parameter layout."""
    args = as_args(example_inputs)
    key = (group, tuple((tuple(a.shape[1:]), a.dtype) if isinstance(a, Tensor) else a for a in args),
           tuple((n, tuple(p.shape)) for n, p in model.named_parameters()))
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = find_symmetries(model, example_inputs, group)
    return per_model[key]
