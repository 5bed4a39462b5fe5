"""Turn a validated flow into a Site: the tensors it moves, by qualified name, and the checks on usage."""

from __future__ import annotations

from torch import Tensor, fx, nn

from telebench.symmetry.sites import ops
from telebench.symmetry.sites.graph import ModelGraph
from telebench.symmetry.sites.propagate import Flow, flip
from telebench.symmetry.sites.site import EpsAction, Refusal, Site, TensorAction


def producer_axis(module: nn.Module, ndim: int) -> int:
    if isinstance(module, nn.Linear | nn.LayerNorm):
        return ndim - 1
    if isinstance(module, ops.BATCH_NORMS):
        return 1
    return ndim - ops.conv_rank(module) - 1


def is_producer(module: nn.Module) -> bool:
    if isinstance(module, nn.LayerNorm):
        return module.elementwise_affine and len(module.normalized_shape) == 1
    if isinstance(module, ops.BATCH_NORMS):
        return module.affine
    return isinstance(module, ops.PRODUCERS) and getattr(module, "groups", 1) == 1


def row_actions(name: str, module: nn.Module, codes: Tensor) -> list[TensorAction]:
    """A producer's output channels: its weight rows and bias entries."""
    out = [TensorAction(f"{name}.weight", 0, codes)]
    if getattr(module, "bias", None) is not None:
        out.append(TensorAction(f"{name}.bias", 0, codes))
    return out


def _norm_actions(graph: ModelGraph, flow: Flow) -> tuple[list[TensorAction], list[EpsAction]]:
    actions: list[TensorAction] = []
    eps: list[EpsAction] = []
    for use in flow.norms:
        module = graph.model.get_submodule(use.module)
        if isinstance(module, ops.BATCH_NORMS) and module.running_mean is not None:
            actions.append(TensorAction(f"{use.module}.running_mean", 0, use.codes, buffer=True))
            actions.append(TensorAction(f"{use.module}.running_var", 0, use.codes, buffer=True, power=2))
        if float(getattr(module, "eps", 0.0)) != 0.0:
            eps.append(EpsAction(use.module, int(use.codes[0])))
    return actions, eps


def build_site(graph: ModelGraph, kind: str, node: fx.Node, seeds: dict[str, Tensor], flow: Flow,
               size: int, block: int) -> Site | Refusal:
    """A site from its seeds (producer name → row codes) and the flow that validated them; or the refusal
    that names the module a site may not move (called twice, tied, read directly)."""
    users = [*flow.consumers, *flow.norms]
    modules = tuple(dict.fromkeys([*seeds, *(u.module for u in users)]))
    for name in modules:
        problem = graph.usage_problem(name)
        if problem:
            return Refusal(kind, node.name, modules, problem)
    actions = [a for name, codes in seeds.items() for a in row_actions(name, graph.model.get_submodule(name), codes)]
    actions += [TensorAction(f"{c.module}.weight", 1, flip(c.codes)) for c in flow.consumers]
    buffers, eps = _norm_actions(graph, flow)
    return Site(kind, node.name, modules, size, block, tuple(actions + buffers), tuple(eps))


def refused_at(graph: ModelGraph, kind: str, flow: Flow, modules: tuple[str, ...]) -> Refusal:
    assert flow.refusal is not None
    where, reason = flow.refusal
    return Refusal(kind, where.name, modules, f"{graph.label(where)} {reason}")
