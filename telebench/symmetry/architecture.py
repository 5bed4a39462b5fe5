"""Read an ``nn.Sequential`` MLP into the plain structure the symmetry groups act on.

The groups need three things from a model: its ``nn.Linear`` layers in order, the elementwise
activation chain between each consecutive pair (to know which symmetries are exact), and a
functional forward pass over *given* weights, so that a teleport can evaluate the loss at
``g·w`` without writing to the model. The hand-written backward and Hessian-vector passes also
need each chain's first and second derivatives, in closed form where known.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Layer = tuple[Tensor, "Tensor | None"]
"""One Linear layer's (weight, bias); bias is None for ``bias=False``."""
Params = list[Layer]


class SymmetryError(ValueError):
    """The model cannot be teleported with the requested group; the message names the layer and why."""


@dataclass(frozen=True)
class Traits:
    """What a symmetry group needs to know about an elementwise activation σ."""

    homogeneous: bool  # σ(c·x) = c·σ(x) for every c > 0, so positive rescaling commutes with σ
    identity: bool  # σ(x) = x
    invertible: bool  # strictly monotone: a bijection, as the data-dependent GL action requires
    piecewise_linear: bool = False  # σ'' = 0 almost everywhere


_IDENTITY = Traits(homogeneous=True, identity=True, invertible=True, piecewise_linear=True)
_HOMOGENEOUS = Traits(homogeneous=True, identity=False, invertible=False, piecewise_linear=True)
_INVERTIBLE = Traits(homogeneous=False, identity=False, invertible=True)
_PIECEWISE = Traits(homogeneous=False, identity=False, invertible=False, piecewise_linear=True)
_OTHER = Traits(homogeneous=False, identity=False, invertible=False)


def _leaky_traits(module: nn.LeakyReLU) -> Traits:
    slope = module.negative_slope
    return Traits(homogeneous=True, identity=slope == 1.0, invertible=slope > 0, piecewise_linear=True)


def _elu_traits(module: nn.ELU) -> Traits:
    return _INVERTIBLE if module.alpha > 0 else _OTHER


Slope = Callable[[Tensor, Tensor], Tensor]  # σ'(z) from z and h = σ(z)
Curvature = Callable[[Tensor, Tensor, Tensor], Tensor]  # σ''(z) from z, h and s = σ'(z)

_ModuleT = TypeVar("_ModuleT", bound=nn.Module)


@dataclass(frozen=True)
class _Kind(Generic[_ModuleT]):
    """How to handle one elementwise module type: its traits, a functional form that never acts in
    place (a teleport keeps pre-activations around while applying σ), and σ', σ'' in closed form
    where teleports need them (None: autograd; piecewise-linear modules need no σ'').

    ``_ModuleT`` is the module type handled, so the callables can read its typed attributes
    (``negative_slope``, ``alpha``, ...)."""

    traits: Callable[[_ModuleT], Traits]
    fn: Callable[[_ModuleT], Callable[[Tensor], Tensor]]
    slope: Callable[[_ModuleT], Slope] | None = None
    curvature: Callable[[_ModuleT], Curvature] | None = None


@functools.lru_cache(maxsize=64)
def _cached_constants(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    return tuple(torch.tensor(v, dtype=dtype, device=device) for v in values)


def _constants(like: Tensor, *values: float) -> tuple[Tensor, ...]:
    """0-d tensors of ``like``'s dtype and device, made once: ``torch.where(c, 1.0, 0.1)`` with two Python
    scalars would come back in the default dtype."""
    return _cached_constants(values, like.dtype, like.device)


# σ' of (Leaky)ReLU as autograd computes it, from a gradient of ones: on CPU ``torch.where`` on a bool
# mask is several times slower (≈ 150 µs against ≈ 10 µs for 2000 × 16 on one thread); same numbers.
_LEAKY_BACKWARD = torch.ops.aten.leaky_relu_backward
_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward


def _leaky_slope(m: nn.LeakyReLU) -> Slope:
    def slope(z: Tensor, h: Tensor) -> Tensor:
        (one,) = _constants(z, 1.0)
        return _LEAKY_BACKWARD(one, z, m.negative_slope, False)  # the 0-d gradient broadcasts to z's shape

    return slope


def _relu_slope(z: Tensor, h: Tensor) -> Tensor:
    (one,) = _constants(z, 1.0)
    return _THRESHOLD_BACKWARD(one, z, 0.0)


def _softplus_slope(m: nn.Softplus) -> Slope:
    return lambda z, h: torch.where(z * m.beta > m.threshold, 1.0, torch.sigmoid(m.beta * z))


def _softplus_curvature(m: nn.Softplus) -> Curvature:
    return lambda z, h, s: torch.where(z * m.beta > m.threshold, 0.0, m.beta * s * (1 - s))


# Each key maps to the _Kind of that very module type; a dict cannot say so, hence _Kind[Any].
_ACTIVATIONS: dict[type[nn.Module], _Kind[Any]] = {
    nn.Identity: _Kind(lambda m: _IDENTITY, lambda m: (lambda x: x), lambda m: lambda z, h: torch.ones_like(z)),
    nn.ReLU: _Kind(lambda m: _HOMOGENEOUS, lambda m: F.relu, lambda m: _relu_slope),
    nn.LeakyReLU: _Kind(
        _leaky_traits,
        lambda m: functools.partial(F.leaky_relu, negative_slope=m.negative_slope),
        _leaky_slope,
    ),
    nn.Tanh: _Kind(
        lambda m: _INVERTIBLE, lambda m: torch.tanh, lambda m: lambda z, h: 1 - h * h, lambda m: lambda z, h, s: -2 * h * s
    ),
    nn.Sigmoid: _Kind(
        lambda m: _INVERTIBLE,
        lambda m: torch.sigmoid,
        lambda m: lambda z, h: h * (1 - h),
        lambda m: lambda z, h, s: s * (1 - 2 * h),
    ),
    nn.Softsign: _Kind(
        lambda m: _INVERTIBLE,
        lambda m: F.softsign,
        lambda m: lambda z, h: (1 + z.abs()).square().reciprocal(),
        lambda m: lambda z, h, s: -2 * torch.sign(z) * s / (1 + z.abs()),
    ),
    nn.ELU: _Kind(
        _elu_traits,
        lambda m: functools.partial(F.elu, alpha=m.alpha),
        lambda m: lambda z, h: torch.where(z > 0, 1.0, h + m.alpha),
        lambda m: lambda z, h, s: torch.where(z > 0, 0.0, h + m.alpha),
    ),
    nn.Softplus: _Kind(
        lambda m: _INVERTIBLE,
        lambda m: functools.partial(F.softplus, beta=m.beta, threshold=m.threshold),
        _softplus_slope,
        _softplus_curvature,
    ),
    nn.GELU: _Kind[nn.GELU](lambda m: _OTHER, lambda m: functools.partial(F.gelu, approximate=m.approximate)),
    nn.SiLU: _Kind(lambda m: _OTHER, lambda m: F.silu),
    nn.Mish: _Kind(lambda m: _OTHER, lambda m: F.mish),
    nn.ReLU6: _Kind(lambda m: _PIECEWISE, lambda m: F.relu6),
    nn.Hardtanh: _Kind[nn.Hardtanh](lambda m: _PIECEWISE, lambda m: functools.partial(F.hardtanh, min_val=m.min_val, max_val=m.max_val)),
}
# Allowed only after the last Linear layer, where no group acts.
# As with _ACTIVATIONS, each function takes a module of its key's type (hence Any).
_OUTPUT_ONLY: dict[type[nn.Module], Callable[[Any], Callable[..., Tensor]]] = {
    nn.Softmax: lambda m: functools.partial(F.softmax, dim=m.dim),
    nn.LogSoftmax: lambda m: functools.partial(F.log_softmax, dim=m.dim),
}
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def describe(index: int, module: nn.Module) -> str:
    """How error messages name a layer: its index in the Sequential and its type."""
    return f"model[{index}] ({type(module).__name__})"


@dataclass(frozen=True)
class Activation:
    """An elementwise module between (or after) Linear layers, with its position in the Sequential."""

    index: int
    module: nn.Module
    traits: Traits
    fn: Callable[[Tensor], Tensor]
    slope: Slope | None = None
    curvature: Curvature | None = None


@dataclass(frozen=True)
class Architecture:
    """An MLP read from an ``nn.Sequential``: ``x → prefix → L₀ → σ₀ → L₁ → … → L_{n-1} → output``.

    Hidden layer ``m`` (0 ≤ m < n-1) is the output of ``linears[m]``; the groups act on its units,
    and ``chains[m]`` is the activation chain after it (empty means identity). ``chains[-1]`` holds
    the modules after the last Linear layer, which no group touches.
    """

    linears: tuple[nn.Linear, ...]
    positions: tuple[int, ...]  # index of each Linear in the Sequential
    prefix: tuple[Callable[[Tensor], Tensor], ...]  # nn.Flatten before the first Linear
    chains: tuple[tuple[Activation, ...], ...]

    @property
    def n_hidden(self) -> int:
        return len(self.linears) - 1

    @property
    def widths(self) -> tuple[int, ...]:
        """Widths of the hidden layers the groups act on."""
        return tuple(layer.out_features for layer in self.linears[:-1])

    def traits(self, m: int) -> Traits:
        """Traits of the whole activation chain after hidden layer m (a composition keeps a property
        only if every link has it; an empty chain is the identity)."""
        chain = self.chains[m]
        return Traits(
            homogeneous=all(a.traits.homogeneous for a in chain),
            identity=all(a.traits.identity for a in chain),
            invertible=all(a.traits.invertible for a in chain),
            piecewise_linear=all(a.traits.piecewise_linear for a in chain),
        )

    def activate(self, m: int, z: Tensor) -> Tensor:
        """Apply the activation chain after Linear layer m."""
        for a in self.chains[m]:
            z = a.fn(z)
        return z

    def activate_with_slope(self, m: int, z: Tensor) -> tuple[Tensor, Tensor]:
        """σ(z) and σ'(z) elementwise for the chain after Linear layer m, detached."""
        h, slope, _ = self._derivatives(m, z, curvature=False)
        return h, slope

    def curvature(self, m: int, z: Tensor) -> Tensor | None:
        """σ''(z) elementwise for the chain after Linear layer m; None where it is zero (piecewise
        linear chains such as LeakyReLU), so callers can skip its terms."""
        if self._closed[m][2]:
            return None
        return self._derivatives(m, z, curvature=True)[2]

    def derivatives(self, m: int, z: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """σ(z), σ'(z) and σ''(z) for the chain after Linear layer m in one pass, detached; σ'' is
        None where it is zero (piecewise-linear chains)."""
        return self._derivatives(m, z, curvature=not self._closed[m][2])

    @functools.cached_property
    def _closed(self) -> tuple[tuple[bool, bool, bool], ...]:
        """Per chain: σ' in closed form, σ'' in closed form (or zero), piecewise linear."""
        return tuple(
            (all(a.slope is not None for a in chain),
             all(a.slope is not None and (a.curvature is not None or a.traits.piecewise_linear) for a in chain),
             all(a.traits.piecewise_linear for a in chain))
            for chain in self.chains
        )

    def _derivatives(self, m: int, z: Tensor, curvature: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """σ, σ' and (optionally) σ'' of the chain: closed forms link by link with the chain rule
        (s = s₂s₁, c = c₂s₁² + s₂c₁), or autograd when a link has none."""
        if z.requires_grad:
            z = z.detach()
        chain = self.chains[m]
        closed = self._closed[m][1 if curvature else 0]
        if closed and len(chain) == 1 and not curvature:  # the common case, without the general loop
            link = chain[0]
            h = link.fn(z)
            return h, link.slope(z, h), None  # type: ignore[misc]
        s: Tensor | None
        c: Tensor | None
        if not closed:
            with torch.enable_grad():
                leaf = z.requires_grad_()
                h = self.activate(m, leaf)
                (s,) = torch.autograd.grad(h, leaf, torch.ones_like(h), create_graph=curvature)
                c = torch.autograd.grad(s, leaf, torch.ones_like(s))[0] if curvature and s.requires_grad else None
            return h.detach(), s.detach(), c
        s = None
        c = None
        for a in chain:
            h = a.fn(z)
            assert a.slope is not None  # `closed`: every link has a closed-form σ'
            s_link = a.slope(z, h)
            if curvature:
                c_link = None if a.curvature is None else a.curvature(z, h, s_link)
                parts = [] if c is None else [s_link * c]
                if c_link is not None:
                    parts.append(c_link if s is None else c_link * s.square())
                c = sum(parts[1:], parts[0]) if parts else None
            s = s_link if s is None else s * s_link
            z = h
        return z, torch.ones_like(z) if s is None else s, c

    def params(self) -> Params:
        """The live weights as detached views (they alias the model's storage)."""
        return [(lin.weight.detach(), None if lin.bias is None else lin.bias.detach()) for lin in self.linears]

    def prepare_inputs(self, x: Tensor) -> Tensor:
        """Inputs as the first Linear layer sees them, on the model's device and dtype."""
        w = self.linears[0].weight
        if x.is_floating_point() and (x.dtype != w.dtype or x.device != w.device):
            x = x.to(device=w.device, dtype=w.dtype)
        for fn in self.prefix:
            x = fn(x)
        return x

    def forward(self, params: Sequence[Layer], x: Tensor) -> Tensor:
        """Functional forward pass with the given weights, from already prepared inputs."""
        for m, (w, b) in enumerate(params):
            x = self.activate(m, F.linear(x, w, b))
        return x


def parse(model: nn.Module) -> Architecture:
    """Read ``model`` into an Architecture, or raise SymmetryError naming the offending layer."""
    if not isinstance(model, nn.Sequential):
        raise SymmetryError(
            f"model is a {type(model).__name__}, but telebench.symmetry acts on an nn.Sequential of "
            "nn.Linear layers and elementwise activations; rebuild the MLP as an nn.Sequential."
        )
    linears: list[nn.Linear] = []
    positions: list[int] = []
    prefix: list[Callable[[Tensor], Tensor]] = []
    chains: list[list[Activation]] = []
    for index, module in enumerate(model):
        kind = type(module)
        if isinstance(module, nn.Linear):
            if linears and linears[-1].out_features != module.in_features:
                raise SymmetryError(
                    f"{describe(index, module)}: in_features={module.in_features} does not match "
                    f"out_features={linears[-1].out_features} of the previous Linear layer "
                    f"{describe(positions[-1], linears[-1])}, so the layers cannot be chained."
                )
            linears.append(module)
            positions.append(index)
            chains.append([])
        elif isinstance(module, _CONVOLUTIONS):
            raise SymmetryError(
                f"{describe(index, module)}: convolutions are not supported; telebench.symmetry acts "
                "only on nn.Linear layers with elementwise activations between them."
            )
        elif kind in _ACTIVATIONS and linears:
            k = _ACTIVATIONS[kind]
            slope = None if k.slope is None else k.slope(module)
            curvature = None if k.curvature is None else k.curvature(module)
            chains[-1].append(Activation(index, module, k.traits(module), k.fn(module), slope, curvature))
        elif kind in _ACTIVATIONS or (kind is nn.Flatten and not linears):
            # Before the first Linear layer an elementwise module only transforms the inputs.
            prefix.append(
                functools.partial(torch.flatten, start_dim=module.start_dim, end_dim=module.end_dim)
                if type(module) is nn.Flatten  # i.e. kind is nn.Flatten; narrows module for the checker
                else _ACTIVATIONS[kind].fn(module)
            )
        elif kind in _OUTPUT_ONLY and linears:
            chains[-1].append(Activation(index, module, _OTHER, _OUTPUT_ONLY[kind](module)))
        else:
            raise SymmetryError(
                f"{describe(index, module)}: not a layer telebench.symmetry can act on; use nn.Linear "
                "layers with elementwise activations (ReLU, LeakyReLU, Identity, Tanh, GELU, Sigmoid, ...)."
            )
    if len(linears) < 2:
        raise SymmetryError(
            f"model has {len(linears)} nn.Linear layer(s); a symmetry needs a hidden layer between two "
            "Linear layers to act on."
        )
    for m, chain in enumerate(chains[:-1]):
        for a in chain:
            if type(a.module) in _OUTPUT_ONLY:
                raise SymmetryError(
                    f"{describe(a.index, a.module)}: {type(a.module).__name__} mixes units, so it is only "
                    f"allowed after the last Linear layer, not after {describe(positions[m], linears[m])}."
                )
    tensors = [t for lin in linears for t in (lin.weight, lin.bias) if t is not None]  # parameters(), without its machinery
    dtypes = {t.dtype for t in tensors}
    devices = {t.device for t in tensors}
    if len(dtypes) > 1 or len(devices) > 1:
        raise SymmetryError(
            f"the Linear layers mix dtypes {sorted(map(str, dtypes))} or devices {sorted(map(str, devices))}; "
            "move the whole model to one dtype and device with model.to(...)."
        )
    return Architecture(
        linears=tuple(linears),
        positions=tuple(positions),
        prefix=tuple(prefix),
        chains=tuple(tuple(c) for c in chains),
    )


def flat(params: Sequence[Layer]) -> list[Tensor]:
    """All weight and bias tensors of ``params`` in layer order (biases that are None skipped)."""
    return [t for layer in params for t in layer if t is not None]


def unflat(tensors: Sequence[Tensor], like: Sequence[Layer]) -> Params:
    """Inverse of :func:`flat` for a Params with the same bias pattern as ``like``."""
    it = iter(tensors)
    return [(next(it), None if b is None else next(it)) for _, b in like]
