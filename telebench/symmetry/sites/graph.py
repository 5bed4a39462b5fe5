"""Read a model with torch.fx: its graph, every node's output shape from one run on two example rows,
and where each module and parameter is used (a module called twice or a tied weight rules a site out)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn

from telebench.symmetry.architecture import SymmetryError

ROWS = 2  # discovery runs the model on this many example rows: shapes are all it needs


@dataclass(frozen=True)
class TensorInfo:
    """A tensor the model computed during discovery, by its shape alone."""

    shape: tuple[int, ...]


def _summarise(value: Any) -> Any:
    if isinstance(value, Tensor):
        return TensorInfo(tuple(value.shape))
    if isinstance(value, tuple | list) and not isinstance(value, torch.Size):
        return type(value)(_summarise(v) for v in value) if isinstance(value, list) else tuple(
            _summarise(v) for v in value)
    return value


class _Recorder(fx.Interpreter):
    """Runs the traced graph once and keeps each node's output shape (or its value, when not a tensor)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.values[n] = _summarise(result)
        return result


def as_args(inputs: Tensor | Sequence[Tensor]) -> tuple[Any, ...]:
    return tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)


def _rows(value: Any) -> Any:
    return value[:ROWS] if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] > ROWS else value


def _on(value: Any, like: Tensor | None) -> Any:
    """An example input on the model's device (a floating one in its dtype too)."""
    if not isinstance(value, Tensor) or like is None:
        return value
    return value.to(like.device, like.dtype) if value.is_floating_point() else value.to(like.device)


@contextmanager
def frozen_state(model: nn.Module, devices: Sequence[torch.device] = ()) -> Iterator[None]:
    """Run the model without leaving a trace: buffers (BatchNorm's running statistics) restored, the
    global RNG forked (Dropout draws no numbers from the caller's stream), no autograd graph."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    cuda = [d for d in devices if d.type == "cuda"]
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


def node_label(graph: ModelGraph | None, node: fx.Node) -> str:
    """How messages name a node: its fx name and what it runs."""
    if node.op == "call_module":
        kind = type(graph.module(node)).__name__ if graph is not None else "module"
        return f"node '{node.name}' ({kind} '{node.target}')"
    if node.op == "call_function":
        target = getattr(node.target, "__name__", str(node.target))
        return f"node '{node.name}' ({target})"
    if node.op == "call_method":
        return f"node '{node.name}' (.{node.target}())"
    return f"node '{node.name}' ({node.op})"


@dataclass
class ModelGraph:
    """A traced model and what discovery needs of it."""

    model: nn.Module
    gm: fx.GraphModule
    values: dict[fx.Node, Any]  # TensorInfo for tensors, the value itself otherwise
    calls: dict[str, list[fx.Node]]  # module qualified name → the nodes that call it
    attr_uses: dict[str, list[fx.Node]]  # tensor qualified name → get_attr nodes that read it directly
    aliases: dict[str, tuple[str, ...]]  # parameter name → every name of the same tensor (tied weights)

    @property
    def nodes(self) -> list[fx.Node]:
        return list(self.gm.graph.nodes)

    def module(self, node: fx.Node) -> nn.Module:
        assert node.op == "call_module" and isinstance(node.target, str)
        return self.gm.get_submodule(node.target)

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        info = self.values.get(node)
        if not isinstance(info, TensorInfo):
            raise SymmetryError(f"{node_label(self, node)} did not produce a tensor during discovery.")
        return info.shape

    def label(self, node: fx.Node) -> str:
        return node_label(self, node)

    def usage_problem(self, module_name: str) -> str | None:
        """Why a site may not move the tensors of ``module_name`` (None: it may): the module is called
        more than once, one of its tensors is read outside its own call, or a parameter is tied."""
        calls = self.calls.get(module_name, [])
        if len(calls) != 1:
            where = ", ".join(f"'{n.name}'" for n in calls) or "no node"
            return f"module '{module_name}' is called {len(calls)} times ({where}), so one move cannot fit every call"
        module = self.model.get_submodule(module_name)
        prefix = f"{module_name}." if module_name else ""
        for name, _ in module.named_parameters(recurse=True, remove_duplicate=False):
            full = prefix + name
            others = [a for a in self.aliases.get(full, (full,)) if a != full]
            if others:
                return f"parameter '{full}' is tied to '{others[0]}', which the move would change as well"
        for name in [n for n, _ in module.named_parameters(remove_duplicate=False)] + [
                n for n, _ in module.named_buffers(remove_duplicate=False)]:
            uses = self.attr_uses.get(prefix + name)
            if uses:
                return f"'{prefix + name}' is also read directly at node '{uses[0].name}', outside its module's call"
        return None


def _aliases(model: nn.Module) -> dict[str, tuple[str, ...]]:
    by_tensor: dict[int, list[str]] = defaultdict(list)
    for name, p in model.named_parameters(remove_duplicate=False):
        by_tensor[id(p)].append(name)
    return {name: tuple(names) for names in by_tensor.values() for name in names}


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace``, with a failure turned into one SymmetryError that says why."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ... on dynamic code
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SymmetryError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {first}); telebench reads a "
            "model's symmetries from its fx graph, so forward() must be free of data-dependent control flow."
        ) from exc


def read_graph(model: nn.Module, example_inputs: Tensor | Sequence[Tensor]) -> ModelGraph:
    """Trace ``model`` and run the graph once on the first two rows of ``example_inputs``."""
    gm = trace(model)
    like = next((p for p in model.parameters() if p.is_floating_point()), None)
    args = tuple(_on(_rows(a), like) for a in as_args(example_inputs))
    devices = list({a.device for a in args if isinstance(a, Tensor)})
    recorder = _Recorder(gm)
    try:
        with frozen_state(model, devices):
            recorder.run(*args)
    except Exception as exc:
        raise SymmetryError(
            f"the traced {type(model).__name__} failed on the example inputs ({type(exc).__name__}: {exc})."
        ) from exc
    calls: dict[str, list[fx.Node]] = defaultdict(list)
    attr_uses: dict[str, list[fx.Node]] = defaultdict(list)
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)].append(node)
        elif node.op == "get_attr":
            attr_uses[str(node.target)].append(node)
    return ModelGraph(model, gm, recorder.values, dict(calls), dict(attr_uses), _aliases(model))



