"""The checks of :func:`telebench.symmetry.teleport`'s arguments, run once before any work.

A teleport that is handed a wrong option, a batch the model cannot take or a model it cannot move
would otherwise fail deep inside torch (or worse, run and report nonsense). Each check here raises
one sentence that names the argument and the fix: ValueError for an option or a batch,
SymmetryError (a ValueError) for the model's weights' dtype and device. Nothing is written to the
model. The checks are cheap: shapes and dtypes only (no forward pass on the MLP path), and the
value checks (finite weights, inputs and targets; labels in range) are a few reductions the host
reads once, plus one read of each label tensor's min and max.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telebench.symmetry.architecture import SymmetryError
from telebench.symmetry.groups import PARAMETRIZATIONS
from telebench.symmetry.search_types import SearchOptions

DIRECTIONS = ("increase", "decrease")
MODES = ("optimize", "random")
WEIGHT_DTYPES = (torch.float32, torch.float64)
LABEL_DTYPES = (torch.int64, torch.uint8)  # what cross_entropy and nll_loss take as class indices
PROBE_ROWS = 2  # rows a failed site discovery is re-run on, to tell a bad batch from an untraceable model

def _got(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _real(value: object) -> TypeGuard[float]:
    """A real number (numpy's too), but not a bool, a string or a tensor."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bound(name: str, value: object) -> None:
    """None or a non-negative number, infinity included (it disables the bound); NaN never."""
    if value is not None and not (_real(value) and not math.isnan(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative number or None, got {_got(value)}.")


def check_options(settings: SearchOptions, mode: str, tolerance: object, max_weight_change: object,
                  held_out_tolerance: object, random_scale: object) -> None:
    """The scalar options: names from their lists, numbers of the right type and range."""
    if settings.direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {settings.direction!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if settings.parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {settings.parametrization!r}.")
    steps, lr, cap = settings.steps, settings.lr, settings.cap
    if not (isinstance(steps, int) and not isinstance(steps, bool)) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {_got(steps)}.")
    if not (_real(lr) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {_got(lr)}.")
    if cap is not None and not (_real(cap) and not math.isnan(cap)):
        raise ValueError(f"cap must be a number (the objective value that stops the search) or None, got {_got(cap)}.")
    _bound("tolerance", tolerance)
    _bound("max_weight_change", max_weight_change)
    _bound("held_out_tolerance", held_out_tolerance)
    if random_scale is not None and not (_real(random_scale) and random_scale > 0 and math.isfinite(random_scale)):
        raise ValueError(f"random_scale must be a positive finite number or None, got {_got(random_scale)}.")


def check_weights(model: nn.Module) -> tuple[Tensor | None, list[Tensor]]:
    """One dtype (float32 or float64) and one device over the parameters; a floating one to compare
    the batch with (None: the model has none, which the paths refuse in their own words), and the
    floating parameters themselves (one walk over the model, for the finite check)."""
    params = list(model.parameters())
    floating: list[Tensor] = [p for p in params if p.is_floating_point()]
    dtypes = {p.dtype for p in floating}
    devices = {p.device for p in params}
    if len(dtypes) > 1:
        raise SymmetryError(f"the model's parameters mix dtypes {sorted(map(str, dtypes))}; teleport needs one dtype: "
                            "convert the whole model with model.float() or model.double().")
    if len(devices) > 1:
        raise SymmetryError(f"the model's parameters lie on several devices {sorted(map(str, devices))}; move the "
                            "whole model to one device with model.to(device).")
    if not floating:
        return None, floating
    like = floating[0]
    if like.dtype not in WEIGHT_DTYPES:
        raise SymmetryError(f"the model's weights are {like.dtype}, but teleport needs float32 or float64 weights "
                            "(half precision rounds more than its invariance checks allow): use model.float().")
    return like, floating


def _tensors(name: str, value: object, site: bool) -> list[tuple[str, Tensor]]:
    """The tensors of an inputs argument, each with the name to report it by (a site model's forward
    may take several positional arguments: a tuple whose first is a tensor)."""
    if isinstance(value, Tensor):
        return [(name, value)]
    if site and isinstance(value, tuple | list) and value and isinstance(value[0], Tensor):
        return [(f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, Tensor)]
    kinds = "a tensor (or a tuple of tensors, for a model whose forward takes several)" if site else "a tensor"
    raise ValueError(f"{name} must be {kinds}, got {type(value).__name__}.")


def _mlp_features(model: nn.Module, name: str, x: Tensor) -> None:
    """The batch an MLP takes: floating point, and (batch, in_features) once the modules before the
    first Linear layer have run (nn.Flatten reshapes, on the meta device; the others are elementwise)."""
    if not isinstance(model, nn.Sequential):
        return  # a Group given for a model that is no MLP: the group check refuses it in its own words
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point for an MLP, got {x.dtype}: convert it with {name}.float().")
    modules = list(model)
    linear = next((m for m in modules if isinstance(m, nn.Linear)), None)
    if linear is None:
        return
    first, n = modules.index(linear), linear.in_features
    shape = x.shape
    flattens = [(i, m) for i, m in enumerate(modules[:first]) if isinstance(m, nn.Flatten)]
    if flattens:
        probe = torch.empty(shape, device="meta")
        for i, m in flattens:
            try:
                probe = m(probe)
            except RuntimeError as exc:
                raise ValueError(f"{name} of shape {tuple(shape)} cannot pass model[{i}] (Flatten): {exc}.") from exc
        shape = probe.shape
    after = "" if shape == x.shape else f" (shape {tuple(shape)} after the Flatten before the first Linear layer)"
    if len(shape) != 2:
        fix = f"add a batch dimension with {name}.unsqueeze(0)" if len(shape) < 2 else f"flatten it with {name}.flatten(1)"
        raise ValueError(f"{name} must be 2-D (batch, features) for an MLP, got shape {tuple(x.shape)}{after}: {fix}.")
    if shape[-1] != n:
        raise ValueError(f"{name} has {shape[-1]} features (shape {tuple(x.shape)}){after}, but the model's first "
                         f"Linear layer, model[{first}], takes in_features={n}: pass {name} of shape (batch, {n}).")


def class_index_loss(loss_fn: object) -> int | None:
    """The ignore_index of a class-index loss (cross-entropy, NLL), or None for any other loss."""
    if loss_fn is F.cross_entropy or loss_fn is F.nll_loss:
        return -100  # their default ignore_index
    if isinstance(loss_fn, nn.CrossEntropyLoss | nn.NLLLoss):
        return int(loss_fn.ignore_index)
    return None


_KNOWN = (F.cross_entropy, F.nll_loss, F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss)
_KNOWN_MODULES = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)


def _targets(model: nn.Module, name: str, y: object, rows: int | None, loss_fn: object, site: bool,
             checks: _Checks) -> None:
    """Targets: one per input row, class indices int64 in range for cross-entropy, finite when floating."""
    if not isinstance(y, Tensor):
        if site:
            return  # a site model's loss may take any targets
        raise ValueError(f"{name} must be a tensor, got {type(y).__name__}.")
    known = not site or any(loss_fn is f for f in _KNOWN) or isinstance(loss_fn, _KNOWN_MODULES)
    if known and rows is not None and (y.dim() == 0 or y.shape[0] != rows):
        got = "a 0-d tensor" if y.dim() == 0 else f"{y.shape[0]} rows (shape {tuple(y.shape)})"
        raise ValueError(f"{name} has {got} but the inputs have {rows} rows: pass one target per input row.")
    if y.is_floating_point():
        checks.finite(f"{name} contain NaN or inf: teleport needs finite targets.", y)
        return
    ignore = class_index_loss(loss_fn)
    if ignore is None:
        return
    loss = getattr(loss_fn, "__name__", type(loss_fn).__name__)
    if y.dtype not in LABEL_DTYPES:
        raise ValueError(f"{name} must be int64 class indices for {loss}, got {y.dtype}: convert them with {name}.long().")
    lin = [m for m in model if isinstance(m, nn.Linear)] if isinstance(model, nn.Sequential) and not site else []
    if lin and y.dim() != 1:
        raise ValueError(f"{name} must be 1-D class indices for {loss} on an MLP, got shape {tuple(y.shape)}.")
    classes = lin[-1].out_features if lin else None
    span = f"[0, {classes}) (the last Linear layer's out_features)" if lin else "[0, n_classes)"
    checks.labels(f"{name} must be class indices in {span} for {loss}, but some lie outside it.", y, classes, ignore)


def _batch(model: nn.Module, names: tuple[str, str], inputs: object, targets: object, loss_fn: object,
           like: Tensor | None, site: bool, checks: _Checks) -> None:
    """One (inputs, targets) batch: its structure checked here, its values added to ``checks``."""
    tensors = _tensors(names[0], inputs, site)
    first = tensors[0][1]
    if first.dim() > 0 and first.shape[0] == 0:
        raise ValueError(f"{names[0]} is an empty batch (shape {tuple(first.shape)}): teleport needs at least one row.")
    for name, x in tensors:
        if like is not None and x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but the model is on {like.device}: move it with "
                             f"{name}.to({str(like.device)!r}).")
        if not site:
            _mlp_features(model, name, x)
        if x.is_floating_point():
            checks.finite(f"{name} contain NaN or inf: teleport needs finite inputs.", x)
    rows = first.shape[0] if first.dim() > 0 else None
    _targets(model, names[1], targets, rows, loss_fn, site, checks)


class _Checks:
    """The value checks of one call, read by the host at once (:meth:`read`). Each finite check is a
    0-d reduction, NaN or inf when its tensor holds one (a sum that merely overflowed is told apart
    on the failure path); a label check is the labels' min and max, with the exact test (the ignored
    index allowed) only when those fall outside the range. A reduction is several times cheaper
    than ``isfinite`` on CPU, and on a small net each operator's overhead is what costs."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.values: list[Tensor] = []  # 0-d, finite when all is well
        self.sources: list[tuple[str, Tensor]] = []  # (sentence, the tensor behind each value)
        self.ranges: list[tuple[str, Tensor, int | None, int, Tensor]] = []  # (sentence, y, classes, ignore, [min, max])
        self.weights: nn.Module | None = None  # the model whose floating parameters follow the sources' values

    def finite(self, message: str, t: Tensor) -> None:
        with torch.no_grad():
            self.values.append(t.sum())
        self.sources.append((message, t))

    def finite_weights(self, model: nn.Module, floating: list[Tensor]) -> None:
        """Every floating parameter in one fused reduction (their L1 norms); the parameters' names
        are looked up only when one fails."""
        if not floating:
            return
        with torch.no_grad():
            self.values.extend(torch._foreach_norm(floating, 1))
        self.weights = model

    def labels(self, message: str, y: Tensor, classes: int | None, ignore: int) -> None:
        self.ranges.append((message, y, classes, ignore, torch.stack(torch.aminmax(y))))

    def read(self) -> None:
        """Raise the first failing check's sentence, if any."""
        values = [v if v.device == self.device else v.to(self.device) for v in self.values]
        if values and not math.isfinite(torch.stack(values).sum().item()):
            sources = list(self.sources)
            if self.weights is not None:
                sources += [(f"the model's parameter {name!r} contains NaN or inf: teleport moves finite weights "
                             "only; re-initialise the model or restore a finite checkpoint.", p)
                            for name, p in self.weights.named_parameters() if p.is_floating_point()]
            for (message, source), value in zip(sources, values, strict=True):
                if not bool(value.isfinite()) and not bool(source.detach().isfinite().all()):
                    raise ValueError(message)
        for message, y, classes, ignore, extremes in self.ranges:
            low, high = extremes.tolist()
            if low >= 0 and (classes is None or high < classes):
                continue
            ok = y >= 0
            if classes is not None:
                ok = ok & (y < classes)
            if not bool((ok | (y == ignore)).all()):
                raise ValueError(message)


def check_teleport(model: object, inputs: object, targets: object, loss_fn: object, held_out: object,
                   settings: SearchOptions, mode: str, site: bool, tolerance: object = None,
                   max_weight_change: object = None, held_out_tolerance: object = None,
                   random_scale: object = None) -> None:
    """Every check of one teleport call (``site``: it takes the site path, where any input rank and
    integer inputs are fine); raises the first failure's sentence, else returns having changed nothing."""
    check_options(settings, mode, tolerance, max_weight_change, held_out_tolerance, random_scale)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable as loss_fn(model(inputs), targets), such as "
                         f"torch.nn.functional.cross_entropy, got {type(loss_fn).__name__}.")
    if held_out is not None and not (isinstance(held_out, tuple | list) and len(held_out) == 2):
        raise ValueError(f"held_out must be a pair (inputs, targets), got {type(held_out).__name__}.")
    like, floating = check_weights(model)
    checks = _Checks(torch.device("cpu") if like is None else like.device)
    _batch(model, ("inputs", "targets"), inputs, targets, loss_fn, like, site, checks)
    if held_out is not None:
        _batch(model, ("held_out[0]", "held_out[1]"), held_out[0], held_out[1], loss_fn, like, site, checks)
    checks.finite_weights(model, floating)
    checks.read()


def forward_failure(model: nn.Module, args: Sequence[Any]) -> ValueError | None:
    """After a site discovery failed: the sentence for a batch the model itself cannot run on (its
    plain forward on a few rows fails too), or None when the batch is fine and discovery's own error
    stands (a model torch.fx cannot trace). Costs nothing unless discovery failed."""
    from telebench.symmetry.sites.graph import frozen_state  # here: sites/ imports this module

    rows = [a[:PROBE_ROWS] if isinstance(a, Tensor) and a.dim() > 0 else a for a in args]
    try:
        with frozen_state(model, list({a.device for a in rows if isinstance(a, Tensor)})):
            model(*rows)
    except Exception as exc:  # whatever the model's forward raises on this batch
        shapes = ", ".join(str(tuple(a.shape)) if isinstance(a, Tensor) else type(a).__name__ for a in args)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return ValueError(f"the model cannot run on inputs of shape {shapes}: {type(exc).__name__}: {reason}"
                          f"{'' if reason.endswith('.') else '.'}")
    return None
