"""Attention sites: per head, queries by A and keys by A⁻ᵀ (scores unchanged), values by B and the output
projection's columns by B⁻¹, for nn.MultiheadAttention and for hand-written q/k/v/o Linears.

Hand-written attention is found from its score contractions (matmul or scaled_dot_product_attention):
each Linear upstream of an operand is *probed* (its output rows tagged one by one and followed through
reshapes and transposes) to see which rows meet at each contraction, which gives the heads; the site is
then checked like any other, so a rotary embedding, a non-linear op or a second use of the queries
refuses it at the node that breaks GL(d_head).
"""

from __future__ import annotations

import torch
from torch import Tensor, fx, nn

from telebench.symmetry.sites import ops
from telebench.symmetry.sites.build import build_site
from telebench.symmetry.sites.graph import ModelGraph
from telebench.symmetry.sites.propagate import Arrival, Flow, Mode, along, coords, propagate
from telebench.symmetry.sites.site import ATTENTION_QK, ATTENTION_VO, Refusal, Site, TensorAction


def _minus(n: int) -> Tensor:
    return torch.full((n,), -1, dtype=torch.long)


def _mha_sites(graph: ModelGraph, node: fx.Node, m: nn.MultiheadAttention) -> list[Site | Refusal]:
    name, e, d = str(node.target), m.embed_dim, m.head_dim
    modules = (name,)
    problem = graph.usage_problem(name)
    if problem is None and m.bias_k is not None:
        problem = "add_bias_kv=True appends learned keys and values, which telebench does not move"
    if problem is not None:
        return [Refusal(ATTENTION_QK, node.name, modules, problem)]
    q, k, v = torch.arange(e), -torch.arange(e) - 2, torch.arange(e)
    qk_rows, vo_rows = torch.cat([q, k, _minus(e)]), torch.cat([_minus(2 * e), v])
    qk: list[TensorAction] = []
    vo: list[TensorAction] = [TensorAction(f"{name}.out_proj.weight", 1, -v - 2)]
    if m.in_proj_weight is not None:
        qk.append(TensorAction(f"{name}.in_proj_weight", 0, qk_rows))
        vo.append(TensorAction(f"{name}.in_proj_weight", 0, vo_rows))
    else:
        qk += [TensorAction(f"{name}.q_proj_weight", 0, q), TensorAction(f"{name}.k_proj_weight", 0, k)]
        vo.append(TensorAction(f"{name}.v_proj_weight", 0, v))
    if m.in_proj_bias is not None:
        qk.append(TensorAction(f"{name}.in_proj_bias", 0, qk_rows))
        vo.append(TensorAction(f"{name}.in_proj_bias", 0, vo_rows))
    return [Site(ATTENTION_QK, node.name, modules, e, d, tuple(qk)), Site(ATTENTION_VO, node.name, modules, e, d, tuple(vo))]


def _linear_ancestors(graph: ModelGraph, node: object) -> set[fx.Node]:
    """The Linear calls an operand is computed from, not looking past another contraction or module."""
    found: set[fx.Node] = set()
    stack = [node]
    seen: set[fx.Node] = set()
    while stack:
        n = stack.pop()
        if not isinstance(n, fx.Node) or n in seen:
            continue
        seen.add(n)
        if n.op == "call_module":
            module = graph.module(n)
            if isinstance(module, nn.Linear):
                found.add(n)
            elif isinstance(module, ops.MOVEMENT_MODULES):
                stack.extend(n.all_input_nodes)
        elif n.op in ("call_function", "call_method") and not ops.is_contraction(n):
            stack.extend(n.all_input_nodes)
    return found


def _probe(graph: ModelGraph, producer: fx.Node) -> Flow:
    shape = graph.shape(producer)
    return propagate(graph, {producer: along(torch.arange(shape[-1]), shape, len(shape) - 1)}, Mode("probe"))


def _heads(rows: Tensor) -> list[tuple[int, ...]] | None:
    """The distinct row sets that meet at one contraction (one per head), or None if they overlap."""
    heads = list(dict.fromkeys(tuple(int(x) for x in r) for r in rows if bool((r != -1).all())))
    flat = [x for h in heads for x in h]
    return heads if heads and len(flat) == len(set(flat)) else None


def _codes(n: int, heads: list[tuple[int, ...]], sign: int) -> Tensor:
    codes = _minus(n)
    for h, rows in enumerate(heads):
        for p, r in enumerate(rows):
            c = h * len(rows) + p
            codes[r] = c if sign > 0 else -c - 2
    return codes


def _operand_rows(probes: dict[fx.Node, Flow], node: fx.Node, operand: int, contracted: bool) -> list[tuple[fx.Node, Arrival]]:
    return [(p, a) for p, flow in probes.items() for a in flow.arrivals
            if a.node is node and a.operand == operand and a.contracted == contracted]


def _check(graph: ModelGraph, kind: str, node: fx.Node, seeds: dict[fx.Node, Tensor], block: int) -> Site | Refusal:
    flow = propagate(graph, {p: along(c, graph.shape(p), len(graph.shape(p)) - 1) for p, c in seeds.items()},
                     Mode("matrix", block))
    names = tuple(str(p.target) for p in seeds)
    if flow.refusal is not None:
        where, reason = flow.refusal
        return Refusal(kind, where.name, names, f"{graph.label(where)} {reason}")
    if kind == ATTENTION_QK and node not in flow.paired:
        return Refusal(kind, node.name, names, "the queries and keys do not meet at this contraction")
    if kind == ATTENTION_VO and not flow.consumers:
        return Refusal(kind, node.name, names, "no Linear consumes the attention output")
    size = max(int(coords(c[c != -1]).max()) for c in seeds.values()) + 1
    return build_site(graph, kind, node, {str(p.target): c for p, c in seeds.items()}, flow, size, block)


def _qk(graph: ModelGraph, node: fx.Node, probes: dict[fx.Node, Flow]) -> Site | Refusal | None:
    qs, ks = _operand_rows(probes, node, 0, True), _operand_rows(probes, node, 1, True)
    if len(qs) != 1 or len(ks) != 1:
        return None
    (pq, aq), (pk, ak) = qs[0], ks[0]
    pairs = list(dict.fromkeys(zip(map(tuple, aq.rows.tolist()), map(tuple, ak.rows.tolist()), strict=True)))
    q_heads, k_heads = _heads(torch.tensor([p[0] for p in pairs])), _heads(torch.tensor([p[1] for p in pairs]))
    if q_heads is None or k_heads is None or len(q_heads) != len(pairs) or len(k_heads) != len(pairs):
        return Refusal(ATTENTION_QK, node.name, (str(pq.target), str(pk.target)),
                       "the query and key rows meeting at this contraction do not form disjoint heads")
    block = aq.rows.shape[-1]
    cq = _codes(graph.shape(pq)[-1], q_heads, +1)
    ck = _codes(graph.shape(pk)[-1], k_heads, -1)
    seeds = {pq: torch.where(ck != -1, ck, cq)} if pq is pk else {pq: cq, pk: ck}
    return _check(graph, ATTENTION_QK, node, seeds, block)


def _vo(graph: ModelGraph, node: fx.Node, probes: dict[fx.Node, Flow]) -> Site | Refusal | None:
    vs = _operand_rows(probes, node, 2 if ops.category(node) == ops.SDPA else 1, False)
    if len(vs) != 1:
        return None
    pv, av = vs[0]
    heads = _heads(av.rows)
    if heads is None:
        return Refusal(ATTENTION_VO, node.name, (str(pv.target),), "the value rows do not form disjoint heads")
    return _check(graph, ATTENTION_VO, node, {pv: _codes(graph.shape(pv)[-1], heads, +1)}, av.rows.shape[-1])


def _unreached(graph: ModelGraph, node: fx.Node, ancestors: set[fx.Node], probes: dict[fx.Node, Flow]) -> Refusal | None:
    """Why a Linear upstream of a score contraction never reached it (a rotary embedding, say)."""
    for p in sorted(ancestors, key=lambda n: n.name):
        flow = probes[p]
        if not any(a.node is node for a in flow.arrivals) and flow.refusal is not None:
            where, reason = flow.refusal
            return Refusal(ATTENTION_QK, where.name, (str(p.target),), f"{graph.label(where)} {reason}")
    return None


def attention_sites(graph: ModelGraph) -> tuple[list[Site], list[Refusal]]:
    found: list[Site | Refusal] = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(graph.module(node), nn.MultiheadAttention):
            found += _mha_sites(graph, node, graph.module(node))  # type: ignore[arg-type]
    contractions = [n for n in graph.nodes if ops.is_contraction(n)]
    ancestors = {n: set().union(*(_linear_ancestors(graph, a) for a in n.all_input_nodes)) for n in contractions}
    probes = {p: _probe(graph, p) for p in sorted(set().union(*ancestors.values()), key=lambda n: n.name)}
    for node in contractions:
        results = [r for r in (_qk(graph, node, probes), _vo(graph, node, probes)) if r is not None]
        if not results and ancestors[node]:
            miss = _unreached(graph, node, ancestors[node], probes)
            results = [miss] if miss is not None else []
        found += results
    sites = [s for s in found if isinstance(s, Site)]
    return sites, [r for r in found if isinstance(r, Refusal)]
