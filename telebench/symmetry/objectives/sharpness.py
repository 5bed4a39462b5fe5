"""Sharpness: the mean loss increase L(w + r·d) − L(w) over random unit directions d, per radius r.

One estimator serves two uses. As a *measurement* (:func:`sharpness`) it averages over many
directions; as a *teleport objective* (:class:`Sharpness`) it draws a fixed set of directions once
per teleport (in :meth:`Sharpness.setup`), so the objective is one differentiable function of the
weights during all K search steps.

Direction kinds (``directions=``):

* ``isotropic`` (default): Gaussian over every weight and bias, normalised to unit norm as a whole;
* ``per-layer``: a Gaussian direction per Linear layer (weight and bias together) whose norm is that
  layer's share ‖θ_l‖/‖θ‖ of the weights' norm, so ‖d‖ = 1 and every layer is perturbed by the same
  fraction of its own size (in the spirit of Li et al.'s filter normalisation);
* ``positive-orthant``: uniform on [0, 1)ⁿ then normalised, the reference code's variant, which
  perturbs every weight upwards.

Isotropic and per-layer directions come in antithetic pairs (d, −d): both are draws from the same
symmetric distribution, and the pair cancels the gradient's first-order term r·∇L·d exactly, which
otherwise dominates the estimate's noise at small radii (sharpness is a second-order quantity).

The radius is always the Euclidean length of the perturbation.

Why it is fast: the first Linear layer is linear in its weights, so (W₀ + r·D₀)x = W₀x + r·(D₀x),
and D₀x over the batch is computed once per set of directions. Every radius and direction then
costs only the small layers above it, evaluated together as one batched pass; the wide input layer
(784 or 3072 inputs) is multiplied once per evaluation, not once per perturbation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from telebench.symmetry.architecture import Architecture, Layer, Params, parse
from telebench.symmetry.groups import Group
from telebench.symmetry.objectives.base import Evaluation, Objective
from telebench.symmetry.problem import LossFn, Problem

DIRECTIONS = ("isotropic", "per-layer", "positive-orthant")
DEFAULT_RADII = (0.5, 1.0, 2.0)
MAX_PERTURBED_ROWS = 1 << 20  # radii × directions × batch rows evaluated at once (bounds memory)


def check_options(radii: Sequence[float], n_directions: int, directions: str) -> tuple[float, ...]:
    """Validate sharpness options; returns the radii as floats. ValueError names the bad option."""
    if directions not in DIRECTIONS:
        raise ValueError(f"sharpness directions must be one of {DIRECTIONS}, got {directions!r}.")
    if isinstance(n_directions, bool) or not isinstance(n_directions, int) or n_directions < 1:
        raise ValueError(f"sharpness n_directions must be a positive integer, got {n_directions!r}.")
    if isinstance(radii, (int, float)):
        radii = (radii,)
    values = tuple(float(r) for r in radii)
    if not values or not all(r > 0 and math.isfinite(r) for r in values):
        raise ValueError(f"sharpness radii must be a non-empty list of positive numbers, got {list(radii)!r}.")
    return values


@dataclass(frozen=True)
class Directions:
    """``n`` random directions, stored per Linear layer as ``(n, out, in)`` weights and ``(n, out)``
    biases (None where the layer has no bias).

    ``isotropic`` and ``positive-orthant`` directions are unit vectors over all parameters;
    ``per-layer`` ones are unit vectors per layer, rescaled to the layer's share of ‖θ‖ at evaluation
    time (:meth:`scales`), because that share changes as a teleport moves the weights.
    """

    kind: str
    layers: list[Layer]

    @property
    def count(self) -> int:
        return self.layers[0][0].shape[0]

    def scales(self, params: Params) -> list[Tensor | float]:
        """Per layer, the factor the stored directions are multiplied by at ``params``."""
        if self.kind != "per-layer":
            return [1.0] * len(params)
        norms = torch.stack([torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in layer if t is not None]))
                             for layer in params])
        return list(norms / torch.linalg.vector_norm(norms))

    def slice(self, start: int, stop: int) -> Directions:
        return Directions(self.kind, [(w[start:stop], None if b is None else b[start:stop]) for w, b in self.layers])


def draw_directions(
    params: Params, n: int, kind: str = "isotropic", generator: torch.Generator | None = None
) -> Directions:
    """``n`` random directions shaped like ``params`` (drawn on the generator's device, then moved)."""
    if kind not in DIRECTIONS:
        raise ValueError(f"sharpness directions must be one of {DIRECTIONS}, got {kind!r}.")
    like = params[0][0]
    device = generator.device if generator is not None else like.device

    def draw(shape: tuple[int, ...]) -> Tensor:
        fn = torch.rand if kind == "positive-orthant" else torch.randn
        return fn((n, *shape), generator=generator, dtype=like.dtype, device=device).to(like.device)

    raw = [(draw(tuple(w.shape)), None if b is None else draw(tuple(b.shape))) for w, b in params]
    if kind != "positive-orthant":  # antithetic pairs ±d: the gradient's linear term cancels exactly
        half = (n + 1) // 2

        def antithetic(t: Tensor) -> Tensor:
            return torch.cat([t[:half], -t[: n - half]])

        raw = [(antithetic(w), None if b is None else antithetic(b)) for w, b in raw]

    def sq_norm(layer: Layer) -> Tensor:
        return sum(t.reshape(n, -1).square().sum(1) for t in layer if t is not None)  # type: ignore[return-value]

    if kind == "per-layer":
        norms = [sq_norm(layer).sqrt() for layer in raw]
    else:
        total = torch.stack([sq_norm(layer) for layer in raw]).sum(0).sqrt()
        norms = [total] * len(raw)
    layers = [
        (w / norm[:, None, None], None if b is None else b / norm[:, None]) for (w, b), norm in zip(raw, norms, strict=True)
    ]
    return Directions(kind, layers)


class Probe:
    """Perturbed losses of one MLP on one batch, for fixed directions, as a differentiable function
    of the weights. Holds D₀x (the first layer's perturbations of the batch), computed once."""

    def __init__(self, arch: Architecture, inputs: Tensor, targets: Tensor, loss_fn: LossFn, directions: Directions):
        self.arch, self.inputs, self.targets, self.loss_fn, self.directions = arch, inputs, targets, loss_fn, directions
        d0, db0 = directions.layers[0]
        first = torch.einsum("bi,koi->kbo", inputs, d0)  # (directions, batch, width): D₀x per direction
        self.first = first if db0 is None else first + db0[:, None, :]
        last = len(arch.linears) - 1
        self._loss = vmap(lambda out: loss_fn(arch.activate(last, out), targets))

    def losses(self, params: Params, radii: Tensor) -> tuple[Tensor, Tensor]:
        """``(L(w), L(w + r·d))`` with the second of shape (radii, directions)."""
        arch, x = self.arch, self.inputs
        scales = self.directions.scales(params)
        w0, b0 = params[0]
        z0 = F.linear(x, w0, b0)
        step = radii[:, None, None, None] * scales[0]  # (R, 1, 1, 1)
        z = z0 + step * self.first[None]  # (R, K, B, n₀)
        clean = z0
        for m, ((w, b), (dw, db)) in enumerate(zip(params[1:], self.directions.layers[1:], strict=True)):
            h, clean = arch.activate(m, z), arch.activate(m, clean)
            r = radii[:, None, None, None] * scales[m + 1]
            weight = w + r * dw[None]  # (R, K, out, in)
            z = h @ weight.mT
            if b is not None:
                # The directions share params' bias pattern, so db is not None here.
                z = z + (b + r[..., 0] * cast(Tensor, db)[None])[:, :, None, :]  # (R, K, 1, out)
            clean = F.linear(clean, w, b)
        base = self.loss_fn(arch.activate(len(params) - 1, clean), self.targets)
        n_r, n_k = z.shape[:2]
        perturbed = self._loss(z.reshape(n_r * n_k, *z.shape[2:])).reshape(n_r, n_k)
        return base, perturbed


def _per_chunk(n_radii: int, batch: int, n_directions: int) -> int:
    return max(1, min(n_directions, MAX_PERTURBED_ROWS // max(1, n_radii * batch)))


class Sharpness(Objective):
    """Mean over radii and a fixed set of directions of L(w + r·d) − L(w), on the teleport batch.

    ``radii``: perturbation lengths; ``n_directions``: directions drawn once per teleport;
    ``directions``: isotropic | per-layer | positive-orthant; ``seed``: seeds the directions when the
    teleport passes no generator.
    """

    name = "sharpness"

    def __init__(
        self,
        radii: Sequence[float] = DEFAULT_RADII,
        n_directions: int = 16,
        directions: str = "isotropic",
        seed: int = 0,
    ) -> None:
        self.radii = check_options(radii, n_directions, directions)
        self.n_directions, self.kind, self.seed = n_directions, directions, int(seed)
        self._directions: Directions | None = None
        self._probes: list[tuple[Problem, list[Probe]]] = []

    def setup(self, problem: Problem, group: Group | None, generator: torch.Generator | None) -> None:
        """Draw this teleport's directions (from ``generator``, else from ``seed``)."""
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        self._directions = draw_directions(problem.arch.params(), self.n_directions, self.kind, gen)
        self._probes = []

    def _probes_for(self, problem: Problem) -> list[Probe]:
        if self._directions is None:
            self.setup(problem, None, None)
        assert self._directions is not None
        for known, probes in self._probes:
            if known is problem:
                return probes
        per = _per_chunk(len(self.radii), len(problem.inputs), self.n_directions)
        probes = [
            Probe(problem.arch, problem.inputs, problem.targets, problem.loss_fn, self._directions.slice(s, s + per))
            for s in range(0, self.n_directions, per)
        ]
        self._probes = [(problem, probes)]  # one problem per teleport; keep only the latest
        return probes

    def evaluate(self, problem: Problem, params: Params, *, create_graph: bool) -> Evaluation:
        with torch.set_grad_enabled(create_graph):
            radii = torch.tensor(self.radii, dtype=params[0][0].dtype, device=params[0][0].device)
            total, base = None, None
            for probe in self._probes_for(problem):
                base, perturbed = probe.losses(params, radii)
                total = perturbed.sum() if total is None else total + perturbed.sum()
            assert total is not None and base is not None
            value = total / (len(self.radii) * self.n_directions) - base
        return Evaluation(value, base)


def sharpness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn = F.cross_entropy,
    radii: Sequence[float] = DEFAULT_RADII,
    n_directions: int = 64,
    directions: str = "isotropic",
    seed: int = 0,
    params: Params | None = None,
) -> dict[float, float]:
    """Sharpness of an MLP on ``(x, y)``: ``{radius: mean over directions of L(w + r·d) − L(w)}``.

    ``model`` is an nn.Sequential MLP as :func:`telebench.symmetry.teleport` accepts; ``params``
    (functional weights) measures at other weights than the model's. Seeded and without side effects.
    """
    values = check_options(radii, n_directions, directions)
    arch = parse(model)
    weights = arch.params() if params is None else params
    like = weights[0][0]
    targets = y.to(device=like.device, dtype=like.dtype) if y.is_floating_point() else y.to(like.device)
    inputs = arch.prepare_inputs(x)
    dirs = draw_directions(weights, n_directions, directions, torch.Generator().manual_seed(seed))
    r = torch.tensor(values, dtype=like.dtype, device=like.device)
    per = _per_chunk(len(values), len(inputs), n_directions)
    sums = torch.zeros(len(values), dtype=torch.float64, device=like.device)
    base = None
    with torch.no_grad():
        for start in range(0, n_directions, per):
            base, perturbed = Probe(arch, inputs, targets, loss_fn, dirs.slice(start, start + per)).losses(weights, r)
            sums += perturbed.double().sum(1)
    assert base is not None
    means = (sums / n_directions - base.double()).tolist()
    return dict(zip(values, means, strict=True))

