"""The reference code's curvature ψ: what Zhao et al.'s correlation study measured, not telebench's κ.

telebench's ``curvature`` objective (:mod:`telebench.symmetry.objectives.curvature`) is the curvature
of the orbit γ(t) = exp(tM)·w under the teleport's own group (for ``gl-data``: telebench's gl-data
orbit curvature). The ICLR-2024 reference code measures another quantity, ψ, which this module
reproduces (Rose-STL-Lab/Teleportation-Optimization at d60eac0, ``curvature_utils.compute_gamma_12``
and ``compute_curvature``, used by ``correlation.py``; reference/paper-facts.md §2 "Curvature ψ" and
§3 "Table 1 and Figs. 9-10"). On the same weights the two differ by about three orders of magnitude.

**Definition.** In the reference's column convention (h₀ = X, features × batch; h_{m+1} = σ(W_m h_m)),
for every hidden layer m (0 ≤ m < L−1) the pair U = W_{m+1}, V = W_m is moved along the activation-side
action of paper-facts §1c, V → σ⁻¹(exp(tM_m) σ(V h_m)) h_m⁺, U → U exp(−tM_m), with its own direction
M_m (n_m × n_m, uniform on [0, 1), then ‖M_m‖_F = 1). Its derivatives at t = 0 are the paper's
Eqs. (57) and (60), with σ″ = 0 (piecewise-linear σ):

* γ′: U-block −U M_m; V-block (M_m σ(V h_m) ⊘ σ′(V h_m)) h_m⁺;
* γ″: U-block U M_m²; V-block (M_m² σ(V h_m) ⊘ σ′(V h_m)) h_m⁺.

Each pair's blocks are added into the blocks of the weights they belong to (W_m gets the V-block of
pair m and the U-block of pair m−1, as the code's ``gamma_1_list[m] +=``), all at the unmoved weights
and activations, so there are no cross terms between pairs; the per-weight blocks are then flattened
and concatenated. The curvature is the paper's Eq. (47),

    ψ = √(‖γ′‖²‖γ″‖² − (γ′·γ″)²) / ‖γ′‖³,

computed as ‖γ″ − (γ′·γ″/‖γ′‖²)γ′‖ / ‖γ′‖² (the same number without the cancellation), and averaged
over ``n_draws`` (M, batch) draws.

**Draws.** Draw i seeds a fresh CPU generator with 12345·i + ``seed`` and takes M_0, M_1, … from it
in float32, so ``seed=0`` gives the reference's very matrices (``torch.manual_seed(12345 * curve_idx)``,
then ``torch.rand`` per layer). Its batch is chunk i mod k of the data, cut into k consecutive chunks of
``batch_size`` rows (the reference's teleport batch: 200; a remainder is dropped, and data smaller
than one chunk is one chunk). The reference draws a fresh shuffled batch of 200 for each of its 200
draws; the correlation study measures every network on the same fixed subset instead.

**Departures, all where the reference has no answer.** Biases (the reference's nets have none): the
V-block acts on [V, b] through the augmented input [h; 1], so a bias gets the last column of that block,
and the U-action leaves biases alone. σ′ at exactly 0 is the left slope (the reference's ``sigma_1``
returns 0 there and divides by it). Every hidden activation chain must be invertible and piecewise
linear (LeakyReLU with a positive slope, Identity): with σ″ ≠ 0 Eq. (60) needs a term the code lacks,
and σ′ = 0 (ReLU) divides by zero.

As a teleport objective (``objective: curvature_reference``) it is a differentiable function of the
weights through σ(Vh) and the pseudo-inverses, whatever group the teleport moves along; the
directions are drawn once per teleport, so every step optimises the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telebench.symmetry.architecture import Architecture, Params, SymmetryError, describe, parse
from telebench.symmetry.groups import Group
from telebench.symmetry.objectives.base import Evaluation, Objective
from telebench.symmetry.problem import Problem

REFERENCE_DRAWS = 200  # correlation.py: 200 (M, batch) draws per network
REFERENCE_BATCH = 200  # correlation.py: tele_batch_size
SEED_STRIDE = 12345  # correlation.py: torch.manual_seed(12345 * curve_idx)


def check_architecture(arch: Architecture) -> None:
    """SymmetryError naming the layer unless every hidden chain is invertible and piecewise linear."""
    for m in range(arch.n_hidden):
        traits = arch.traits(m)
        if not (traits.invertible and traits.piecewise_linear):
            where = arch.chains[m][0] if arch.chains[m] else None
            name = describe(where.index, where.module) if where is not None else f"hidden layer {m}"
            raise SymmetryError(
                f"{name}: the reference code's curvature ψ needs an invertible, piecewise-linear activation "
                "(LeakyReLU with a positive slope, or Identity): it divides by σ′ and takes σ″ = 0."
            )


def check_options(n_draws: int, batch_size: int) -> None:
    for key, value in (("n_draws", n_draws), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"curvature_reference {key} must be a positive integer, got {value!r}.")


def draw_directions(widths: tuple[int, ...], n_draws: int, seed: int = 0,
                    generator: torch.Generator | None = None) -> list[list[Tensor]]:
    """Per draw, one Frobenius-normalised M_m per hidden layer, uniform on [0, 1) before normalising
    (float32 on the CPU). Without ``generator``, draw i comes from ``manual_seed(12345·i + seed)``."""
    draws = []
    for i in range(n_draws):
        gen = generator if generator is not None else torch.Generator().manual_seed(SEED_STRIDE * i + seed)
        mats = [torch.rand((n, n), generator=gen) for n in widths]
        draws.append([m / torch.linalg.matrix_norm(m) for m in mats])
    return draws


def chunks(inputs: Tensor, batch_size: int) -> list[Tensor]:
    """Consecutive chunks of ``batch_size`` rows (a remainder dropped; fewer rows: one chunk)."""
    if len(inputs) < batch_size:
        return [inputs]
    return [inputs[i * batch_size:(i + 1) * batch_size] for i in range(len(inputs) // batch_size)]


@dataclass(frozen=True)
class PairData:
    """One hidden layer's pair on one batch: σ(Z), σ′(Z) (batch × n) and the transposed pseudo-inverse
    of the (bias-augmented) layer input, (h̃⁺)ᵀ = pinv(H̃) (d̃ × batch)."""

    act: Tensor
    slope: Tensor
    pinv: Tensor


def pair_data(arch: Architecture, params: Params, inputs: Tensor, first_pinv: Tensor | None = None) -> list[PairData]:
    """Every hidden layer's :class:`PairData` at ``params`` on ``inputs`` (differentiable through σ(Z)
    and the pseudo-inverses when ``params`` are; σ′ is piecewise constant). ``first_pinv``: pinv of the
    first layer's input, when the caller has it (it depends on the data alone)."""
    out = []
    h = inputs
    for m, (w, b) in enumerate(params[:-1]):
        z = F.linear(h, w, b)
        a = arch.activate(m, z)
        slope = arch.activate_with_slope(m, z.detach())[1]
        if m == 0 and first_pinv is not None:
            p = first_pinv
        else:
            p = torch.linalg.pinv(augment(h, b is not None))
        out.append(PairData(a, slope, p))
        h = a
    return out


def augment(h: Tensor, bias: bool) -> Tensor:
    """[H, 1]: the layer input with a column of ones for the bias (unchanged without a bias)."""
    return torch.cat([h, h.new_ones(len(h), 1)], dim=1) if bias else h


def derivatives(params: Params, pairs: list[PairData], direction: list[Tensor]) -> tuple[Tensor, Tensor]:
    """γ′(0) and γ″(0) of the reference's curve, flattened layer by layer (weight, then bias)."""
    parts: dict[tuple[int, int, str], list[Tensor]] = {}  # (order, layer, "w" | "b") -> contributions
    for m, (pair, mat) in enumerate(zip(pairs, direction, strict=True)):
        u = params[m + 1][0]
        mat = mat.to(dtype=u.dtype, device=u.device)
        square = mat @ mat
        n_in = params[m][0].shape[1]
        for order, g, sign in ((1, mat, -1.0), (2, square, 1.0)):
            parts.setdefault((order, m + 1, "w"), []).append(sign * (u @ g))
            # Column convention (M σ(Vh) ⊘ σ′(Vh)) h⁺, transposed: pinv(H̃) ((σ(Z) Mᵀ) ⊘ σ′(Z)), then ᵀ.
            block = (pair.pinv @ ((pair.act @ g.T) / pair.slope)).T
            parts.setdefault((order, m, "w"), []).append(block[:, :n_in])
            if params[m][1] is not None:
                parts.setdefault((order, m, "b"), []).append(block[:, n_in])

    def flatten(order: int) -> Tensor:
        pieces = []
        for m, (w, b) in enumerate(params):
            for key, like in (("w", w), ("b", b)):
                if like is not None:
                    found = parts.get((order, m, key))
                    pieces.append((sum(found[1:], found[0]) if found else torch.zeros_like(like)).reshape(-1))
        return torch.cat(pieces)

    return flatten(1), flatten(2)


def psi(velocity: Tensor, acceleration: Tensor) -> Tensor:
    """Eq. (47): √(‖γ′‖²‖γ″‖² − (γ′·γ″)²)/‖γ′‖³, as ‖γ″⊥‖/‖γ′‖²."""
    speed2 = velocity.square().sum().clamp_min(torch.finfo(velocity.dtype).tiny)
    normal = acceleration - (velocity @ acceleration / speed2) * velocity
    return torch.linalg.vector_norm(normal) / speed2


def mean_psi(arch: Architecture, params: Params, batches: list[Tensor], directions: list[list[Tensor]],
             first_pinvs: list[Tensor] | None = None) -> Tensor:
    """ψ averaged over ``directions``; draw i on batch i mod len(batches) (only those batches are used)."""
    used = min(len(batches), len(directions))
    per_batch = [pair_data(arch, params, batches[j], None if first_pinvs is None else first_pinvs[j]) for j in range(used)]
    values = [psi(*derivatives(params, per_batch[i % used], direction)) for i, direction in enumerate(directions)]
    return torch.stack(values).mean()


class CurvatureReference(Objective):
    """The reference code's ψ on the teleport batch (cut into chunks of ``batch_size`` rows), over
    ``n_draws`` fixed directions drawn once per teleport (from the teleport's CPU generator, else as the
    reference seeds them, offset by ``seed``). The teleport's group does not enter ψ."""

    name = "curvature_reference"

    def __init__(self, n_draws: int = 4, batch_size: int = REFERENCE_BATCH, seed: int = 0) -> None:
        check_options(n_draws, batch_size)
        self.n_draws, self.batch_size, self.seed = n_draws, batch_size, int(seed)
        self._directions: list[list[Tensor]] = []
        self._cache: tuple[Problem, list[Tensor], list[Tensor]] | None = None

    def setup(self, problem: Problem, group: Group | None, generator: torch.Generator | None) -> None:
        """Check the network and draw this teleport's directions."""
        del group
        check_architecture(problem.arch)
        gen = generator if generator is not None and generator.device.type == "cpu" else None
        self._directions = draw_directions(problem.arch.widths, self.n_draws, self.seed, gen)
        self._cache = None

    def _batches(self, problem: Problem, params: Params) -> tuple[list[Tensor], list[Tensor]]:
        """The teleport batch's chunks and the pseudo-inverses of their (augmented) inputs, once per problem."""
        if self._cache is None or self._cache[0] is not problem:
            batches = chunks(problem.inputs.detach(), self.batch_size)[: self.n_draws]
            bias = params[0][1] is not None
            self._cache = (problem, batches, [torch.linalg.pinv(augment(x, bias)) for x in batches])
        return self._cache[1], self._cache[2]

    def evaluate(self, problem: Problem, params: Params, *, create_graph: bool) -> Evaluation:
        if not self._directions:
            self.setup(problem, None, None)
        batches, pinvs = self._batches(problem, params)
        with torch.set_grad_enabled(create_graph):
            value = mean_psi(problem.arch, params, batches, self._directions, pinvs)
        return Evaluation(value if create_graph else value.detach())


def curvature_reference(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    n_draws: int = REFERENCE_DRAWS,
    batch_size: int = REFERENCE_BATCH,
    seed: int = 0,
    params: Params | None = None,
) -> float:
    """The reference code's curvature ψ of an MLP on the batch ``x`` (rows are samples), averaged over
    ``n_draws`` draws of (M, chunk of ``batch_size`` rows); see the module docstring.

    ``y`` is accepted for a signature uniform with the other metrics and unused. Raises SymmetryError
    when a hidden activation is not invertible and piecewise linear.
    """
    del y
    check_options(n_draws, batch_size)
    arch = parse(model)
    check_architecture(arch)
    weights = arch.params() if params is None else [(w.detach(), None if b is None else b.detach()) for w, b in params]
    directions = draw_directions(arch.widths, n_draws, seed)
    with torch.no_grad():
        return float(mean_psi(arch, weights, chunks(arch.prepare_inputs(x), batch_size), directions))
