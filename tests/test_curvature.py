"""Curvature of the minimum: finite differences, reparametrisation invariance, gradients, teleports."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from float64_nets import inputs, mlp
from torch import nn

from telebench.symmetry import SymmetryError, teleport
from telebench.symmetry.architecture import Architecture, Params, flat, parse
from telebench.symmetry.group_registry import get_group
from telebench.symmetry.groups import Element, Group
from telebench.symmetry.objectives.curvature import (
    Curvature,
    curvature,
    curve_derivatives,
    kappa,
    random_direction,
)
from telebench.symmetry.problem import Problem

GROUP_ACTIVATIONS = {"rescale": lambda: nn.LeakyReLU(0.1), "linear": nn.Identity, "gl-data": lambda: nn.LeakyReLU(0.1)}


pytestmark = pytest.mark.usefixtures("one_thread")


_mlp = mlp
_inputs = inputs


def _exact_curve(
    group: Group, arch: Architecture, params: Params, x: torch.Tensor, direction: Element, t: float
) -> torch.Tensor:
    """γ(t) = exp(tM)·w with the group's own exponential and action: the finite-difference reference."""
    g, g_inv = group.element([t * m for m in direction], "exp")
    moved, _ = group.act(arch, params, g, g_inv, group.prepare(arch, params, x))
    return torch.cat([p.reshape(-1) for p in flat(moved)])


@pytest.mark.parametrize(("group_name", "batch"), [("rescale", 30), ("linear", 30), ("gl-data", 30), ("gl-data", 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_curvature_matches_finite_differences_of_the_curve(group_name, batch, bias):
    model = _mlp((5, 8, 6, 3), GROUP_ACTIVATIONS[group_name], bias=bias)
    arch = parse(model)
    group = get_group(group_name)
    params = arch.params()
    x = _inputs(batch, 5)
    direction = random_direction(group, arch, params[0][0], torch.Generator().manual_seed(3))
    velocity, acceleration = curve_derivatives(group, arch, params, group.prepare(arch, params, x), direction)
    h = 1e-4
    plus, zero, minus = (_exact_curve(group, arch, params, x, direction, t) for t in (h, 0.0, -h))
    fd_velocity = (plus - minus) / (2 * h)
    fd_acceleration = (plus - 2 * zero + minus) / h**2
    assert torch.allclose(velocity, fd_velocity, rtol=1e-5, atol=1e-6 * float(fd_velocity.abs().max()))
    assert torch.allclose(acceleration, fd_acceleration, rtol=1e-4, atol=1e-5 * float(fd_acceleration.abs().max()))
    assert float(kappa(velocity, acceleration)) == pytest.approx(float(kappa(fd_velocity, fd_acceleration)), rel=1e-4)


def test_kappa_is_the_textbook_formula_and_a_circle_has_curvature_one_over_radius():
    g = torch.Generator().manual_seed(0)
    v, a = torch.randn(7, generator=g, dtype=torch.float64), torch.randn(7, generator=g, dtype=torch.float64)
    textbook = torch.sqrt(v.dot(v) * a.dot(a) - v.dot(a) ** 2) / v.norm() ** 3
    assert float(kappa(v, a)) == pytest.approx(float(textbook), rel=1e-12)
    radius = 2.5  # γ(t) = R(cos t, sin t): γ′(0) = (0, R), γ″(0) = (−R, 0)
    circle = kappa(torch.tensor([0.0, radius], dtype=torch.float64), torch.tensor([-radius, 0.0], dtype=torch.float64))
    assert float(circle) == pytest.approx(1 / radius, rel=1e-12)


@pytest.mark.parametrize("group_name", ["rescale", "gl-data"])
def test_curvature_does_not_depend_on_how_the_curve_is_parametrised(group_name):
    model = _mlp((5, 8, 6, 3), GROUP_ACTIVATIONS[group_name])
    arch, group = parse(model), get_group(group_name)
    params, x = arch.params(), _inputs(20, 5)
    state = group.prepare(arch, params, x)
    direction = random_direction(group, arch, params[0][0], torch.Generator().manual_seed(2))
    v, a = curve_derivatives(group, arch, params, state, direction)
    reference = float(kappa(v, a))
    # γ(ct) is the curve of the direction cM: same points, different speed
    for c in (0.3, 4.0, -2.0):
        scaled = curve_derivatives(group, arch, params, state, [c * m for m in direction])
        assert float(kappa(*scaled)) == pytest.approx(reference, rel=1e-9)
    # γ(φ(t)) with φ(t) = t + b t²: derivatives φ′γ′ and φ″γ′ + φ′²γ″ at 0
    for b in (-1.5, 0.7):
        assert float(kappa(v, 2 * b * v + a)) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("group_name", ["rescale", "linear"])
def test_forward_mode_agrees_with_double_backward_on_exact_groups(group_name):
    model = _mlp((5, 8, 6, 3), GROUP_ACTIVATIONS[group_name])
    arch, group = parse(model), get_group(group_name)
    params = arch.params()
    direction = random_direction(group, arch, params[0][0], torch.Generator().manual_seed(4))
    forward = curve_derivatives(group, arch, params, None, direction, method="forward")
    backward = curve_derivatives(group, arch, params, None, direction)
    for f, b in zip(forward, backward, strict=True):
        assert torch.allclose(f, b, rtol=1e-12, atol=1e-12)


def test_forward_mode_is_refused_for_gl_data():
    model = _mlp((5, 8, 3), GROUP_ACTIVATIONS["gl-data"])
    arch, group = parse(model), get_group("gl-data")
    params = arch.params()
    direction = random_direction(group, arch, params[0][0], None)
    with pytest.raises(ValueError, match="double-backward"):
        curve_derivatives(group, arch, params, group.prepare(arch, params, _inputs(4, 5)), direction, method="forward")


@pytest.mark.parametrize(("group_name", "batch"), [("rescale", 20), ("gl-data", 20), ("gl-data", 3)])
def test_objective_gradient_along_the_group_matches_finite_differences(group_name, batch):
    """What the teleport search climbs: d/dε κ(exp(εT)·w), via ∂κ/∂w pulled back into the Lie algebra."""
    model = _mlp((6, 5, 4, 3), GROUP_ACTIVATIONS[group_name])
    arch, group = parse(model), get_group(group_name)
    x = _inputs(batch, 6)
    problem = Problem(arch, x, torch.zeros(batch, dtype=torch.long), F.cross_entropy)
    objective = Curvature(n_draws=2)
    objective.setup(problem, group, torch.Generator().manual_seed(1))
    params = arch.params()
    state = group.prepare(arch, params, x)
    _, dparams = objective.value_and_gradient(problem, params, None, value=False)
    algebra = group.pullback(arch, params, state, dparams)
    tangent = group.sample(arch, params[0][0], torch.Generator().manual_seed(5))
    predicted = sum(float((a * t).sum()) for a, t in zip(algebra, tangent, strict=True))

    def along(eps: float) -> float:
        g, g_inv = group.element([eps * t for t in tangent], "exp")
        moved, _ = group.act(arch, params, g, g_inv, state)
        return float(objective.evaluate(problem, moved, create_graph=False).value)

    h = 1e-5
    assert predicted == pytest.approx((along(h) - along(-h)) / (2 * h), rel=1e-5)


@pytest.mark.parametrize("group_name", ["rescale", "gl-data"])
def test_teleport_raises_or_lowers_curvature_and_keeps_the_loss(group_name):
    batch = 10 if group_name == "gl-data" else 64  # gl-data is exact on batches no larger than the width
    x = _inputs(batch, 6, seed=2)
    y = torch.randint(0, 3, (batch,), generator=torch.Generator().manual_seed(3))
    for seed in range(3):
        model = _mlp((6, 16, 12, 3), GROUP_ACTIVATIONS[group_name], seed=seed)
        for direction in ("increase", "decrease"):
            moved = copy.deepcopy(model)
            record = teleport(moved, x, y, F.cross_entropy, group=group_name, objective="curvature",
                              direction=direction, steps=3, lr=0.02, normalize_step=True,
                              objective_kwargs={"n_draws": 3, "seed": 4})
            assert record.accepted
            assert abs(record.relative_loss_change) <= record.tolerance
            if direction == "increase":
                assert record.objective_after > record.objective_before
            else:
                assert record.objective_after < record.objective_before
            # the same quantity as the measurement, with the same seeded directions and group
            measured = curvature(moved, x, group=group_name, n_draws=3, seed=4)
            assert measured == pytest.approx(record.objective_after, rel=1e-9)


def test_measurement_is_seeded_and_checks_its_inputs():
    model = _mlp((5, 8, 3), nn.ReLU)
    first = curvature(model, group="rescale", n_draws=5, seed=1)
    assert curvature(model, group="rescale", n_draws=5, seed=1) == first
    assert curvature(model, group="rescale", n_draws=5, seed=2) != first
    with pytest.raises(ValueError, match="pass inputs x"):
        curvature(_mlp((5, 8, 3), GROUP_ACTIVATIONS["gl-data"]), group="gl-data")
    with pytest.raises(SymmetryError, match="rescale"):
        curvature(_mlp((5, 8, 3), nn.Tanh), group="rescale")
    with pytest.raises(ValueError, match="n_draws"):
        Curvature(n_draws=0)
