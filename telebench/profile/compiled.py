"""``--compile``: what ``torch.compile`` buys for the work a teleport is made of, compile time apart.

The teleport itself is not compiled, because it cannot be compiled meaningfully: it reads values on
the host on purpose (the tolerance test, the optional cap, the loss and objective it reports), runs
Python control flow over the group's layers and solves data-dependent least-squares problems.
TorchDynamo breaks the graph at each host read and recompiles as the weights move, so a compiled
teleport is far slower than an eager one (figures in docs/profile.md). What can be compiled, and is
measured here, eager against compiled:

* ``gradient``: a forward and backward pass of the model (``torch.compile(model)``);
* ``train_step``: the same plus the optimizer's step (the optimizer stays eager);
* ``objective``: one step of a teleport's objective work for ``grad_norm``, Σ‖∇L‖² and its gradient
  with respect to the weights, written with ``torch.func`` (the quantity the search differentiates).

Compile time is the first compiled call minus a steady compiled call. A failure (no C++ compiler,
an unsupported backend) is reported in one line per row and the profile goes on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value

from telebench.profile.timing import Stopwatch
from telebench.profile.workload import Workload
from telebench.training.optimizers import make_optimizer

WHY_NOT_TELEPORT = (
    "the teleport itself is not compiled: its host reads (tolerance check, cap, reported numbers) and "
    "data-dependent least squares break TorchDynamo's graph and force recompiles, so the parts it is made "
    "of are compiled instead"
)


@dataclass
class CompileRow:
    name: str  # gradient | train_step | objective
    status: str  # ok | failed | skipped
    eager_s: float | None = None
    compiled_s: float | None = None
    compile_s: float | None = None  # the first compiled call minus a steady one
    message: str = ""

    @property
    def speedup(self) -> float | None:
        if self.eager_s is None or not self.compiled_s:
            return None
        return self.eager_s / self.compiled_s


def measure_compiled(workload: Workload, backend: str = "inductor", repeat: int = 5) -> list[CompileRow]:
    """Eager and compiled timings (fastest of ``repeat`` samples after two warm-up calls) of each part."""
    rows = [
        _compare(
            "gradient", workload, repeat, workload.gradient, lambda: _compiled_gradient(workload, backend)
        ),
        _compare(
            "train_step", workload, repeat, workload.train_step, lambda: _compiled_step(workload, backend)
        ),
    ]
    objective = workload.subject.teleport.objective
    if objective != "grad_norm":
        rows.append(
            CompileRow(
                "objective",
                "skipped",
                message=f"only grad_norm has a torch.func form here, not {objective}",
            )
        )
    else:
        eager = _objective(workload)
        rows.append(
            _compare("objective", workload, repeat, eager, lambda: torch.compile(eager, backend=backend))
        )
    workload.restore()
    return rows


def _compare(
    name: str,
    workload: Workload,
    repeat: int,
    eager: Callable[[], object],
    build: Callable[[], Callable[[], object]],
) -> CompileRow:
    watch = Stopwatch(workload.device)
    torch.compiler.reset()  # each part pays its own tracing, not a cache its predecessor filled
    try:
        compiled = build()
        _, first = watch.sample(compiled)
        for _ in range(2):
            compiled()
            eager()
        compiled_s = min(watch.sample(compiled)[0] for _ in range(repeat))
        eager_s = min(watch.sample(eager)[0] for _ in range(repeat))
    except Exception as exc:  # compile failures come in many types (backend, C++ toolchain, Dynamo)
        return CompileRow(name, "failed", message=_one_line(exc))
    return CompileRow(name, "ok", eager_s, compiled_s, max(0.0, first - compiled_s))


def _compiled_gradient(workload: Workload, backend: str) -> Callable[[], None]:
    # torch.compile of an nn.Module returns an OptimizedModule (an nn.Module); its stub says only Callable.
    model = cast(nn.Module, torch.compile(copy.deepcopy(workload.model), backend=backend))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        workload.loss_fn(model(workload.inputs), workload.labels).backward()

    return step


def _compiled_step(workload: Workload, backend: str) -> Callable[[], None]:
    plain = copy.deepcopy(workload.train_model)
    model = torch.compile(plain, backend=backend)
    optimizer = make_optimizer(workload.subject.optimizer, plain.parameters())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        workload.loss_fn(model(workload.train_inputs), workload.train_labels).backward()
        optimizer.step()

    return step


def _objective(workload: Workload) -> Callable[[], tuple[dict[str, Tensor], Tensor]]:
    """Σ‖∂L/∂θ‖² on the teleport batch (weights and biases) and its gradient, by torch.func."""
    model, x, y, loss_fn = workload.model, workload.inputs, workload.labels, workload.loss_fn
    params = {k: v.detach() for k, v in model.named_parameters()}

    def grad_norm(p: dict[str, Tensor]) -> Tensor:
        g = grad(lambda q: loss_fn(functional_call(model, q, (x,)), y))(p)
        return sum((t * t).sum() for t in g.values())

    value_and_gradient = grad_and_value(grad_norm)
    return lambda: value_and_gradient(params)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}"
