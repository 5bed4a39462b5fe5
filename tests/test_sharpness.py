"""Sharpness: limits, an analytic quadratic check, direction kinds, and the teleport objective."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from float64_nets import mlp
from torch import nn

from telebench.symmetry import teleport
from telebench.symmetry.architecture import parse
from telebench.symmetry.group_registry import get_group
from telebench.symmetry.objectives.registry import get_objective
from telebench.symmetry.objectives.sharpness import Sharpness, check_options, draw_directions, sharpness
from telebench.symmetry.problem import Problem

pytestmark = pytest.mark.usefixtures("one_thread")


_mlp = mlp


def _data(n: int, d: int, classes: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def test_sharpness_vanishes_as_radius_goes_to_zero():
    model = _mlp((6, 8, 5, 3))
    x, y = _data(64, 6, 3)
    radii = (1e-1, 1e-2, 1e-3, 1e-4)
    values = sharpness(model, x, y, F.cross_entropy, radii=radii, n_directions=32, seed=3)
    assert list(values) == list(radii)
    assert abs(values[1e-4]) < 1e-8
    # second order: antithetic pairs cancel the gradient term, so shrinking r by 10 shrinks it ~100-fold
    for big, small in zip(radii[:-1], radii[1:], strict=True):
        assert abs(values[small]) < abs(values[big]) / 50


def _quadratic_model(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """All weights zero: L(r·d) = ½ r² d_bᵀ A d_b + O(r³), d_b the last bias's block of d."""
    model = nn.Sequential(nn.Linear(n_in, hidden), nn.Identity(), nn.Linear(hidden, n_out)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def test_sharpness_matches_the_hessian_quadratic_form_on_a_quadratic_loss():
    n_in, hidden, n_out = 3, 4, 6
    model = _quadratic_model(n_in, hidden, n_out)
    g = torch.Generator().manual_seed(0)
    root = torch.randn(n_out, n_out, generator=g, dtype=torch.float64)
    a = root @ root.T + torch.eye(n_out, dtype=torch.float64)  # SPD: the Hessian on the last bias

    def loss_fn(out: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((out @ a) * out).sum(1).mean()

    x, y = _data(16, n_in, 2)
    n_params = sum(p.numel() for p in model.parameters())
    r = 1e-3
    count = 4000
    value = sharpness(model, x, y, loss_fn, radii=(r,), n_directions=count, seed=7)[r]
    # Exactly, for the directions drawn: mean over d of ½ r² d_bᵀ A d_b (the O(r³) rest is ~1e-3 relative).
    dirs = draw_directions([(lin.weight, lin.bias) for lin in (model[0], model[2])], count, "isotropic",
                           torch.Generator().manual_seed(7))
    d_b = dirs.layers[-1][1]
    exact = 0.5 * r * r * torch.einsum("ki,ij,kj->k", d_b, a, d_b).mean()
    assert value == pytest.approx(float(exact), rel=5e-3)
    # In expectation over isotropic unit directions: r² tr(H) / (2n), with H = A on the bias block.
    expected = r * r * float(torch.trace(a)) / (2 * n_params)
    assert value == pytest.approx(expected, rel=0.06)
    # and it scales as r²
    twice = sharpness(model, x, y, loss_fn, radii=(2 * r,), n_directions=count, seed=7)[2 * r]
    assert twice / value == pytest.approx(4.0, rel=5e-3)


def test_direction_kinds_have_unit_norm_and_their_defining_shape():
    model = _mlp((5, 7, 4, 3))
    params = parse(model).params()
    norms = {}
    for kind in ("isotropic", "per-layer", "positive-orthant"):
        dirs = draw_directions(params, 9, kind, torch.Generator().manual_seed(0))
        flat = torch.cat([torch.cat([w.reshape(9, -1), b.reshape(9, -1)], 1) for w, b in dirs.layers], 1)
        scales = dirs.scales(params)
        scaled = torch.cat([torch.cat([w.reshape(9, -1), b.reshape(9, -1)], 1) * s
                            for (w, b), s in zip(dirs.layers, scales, strict=True)], 1)
        norms[kind] = scaled.norm(dim=1)
        if kind == "positive-orthant":
            assert bool((flat >= 0).all())
        else:  # antithetic: the second half mirrors the first
            assert torch.equal(flat[5:], -flat[:4])
    for kind, n in norms.items():
        assert torch.allclose(n, torch.ones_like(n)), kind
    # per-layer: each layer's block carries that layer's share of the weights' norm
    dirs = draw_directions(params, 3, "per-layer", torch.Generator().manual_seed(0))
    layer_norms = torch.stack([torch.cat([w.reshape(-1), b.reshape(-1)]).norm() for w, b in params])
    shares = layer_norms / layer_norms.norm()
    for (w, b), s, share in zip(dirs.layers, dirs.scales(params), shares, strict=True):
        block = torch.cat([w.reshape(3, -1), b.reshape(3, -1)], 1).norm(dim=1) * s
        assert torch.allclose(block, share.expand(3))


def test_sharpness_is_seeded_and_chunking_does_not_change_it(monkeypatch):
    model = _mlp((6, 8, 5, 3))
    x, y = _data(40, 6, 3)
    kwargs = dict(radii=(0.5, 1.0), n_directions=12, directions="per-layer", seed=4)
    first = sharpness(model, x, y, F.cross_entropy, **kwargs)
    assert sharpness(model, x, y, F.cross_entropy, **kwargs) == first
    monkeypatch.setattr("telebench.symmetry.objectives.sharpness.MAX_PERTURBED_ROWS", 2 * 40)  # one direction per chunk
    chunked = sharpness(model, x, y, F.cross_entropy, **kwargs)
    for r in first:
        assert chunked[r] == pytest.approx(first[r], rel=1e-10, abs=1e-14)
    other = sharpness(model, x, y, F.cross_entropy, **{**kwargs, "seed": 5})
    assert other != first


def test_objective_equals_the_measurement_averaged_over_radii():
    model = _mlp((6, 8, 5, 3))
    x, y = _data(40, 6, 3)
    radii, n = (0.25, 1.0), 10
    objective = Sharpness(radii=radii, n_directions=n, seed=2)
    problem = Problem(parse(model), x, y, F.cross_entropy)
    objective.setup(problem, get_group("rescale"), None)
    value = objective.evaluate(problem, parse(model).params(), create_graph=False)
    measured = sharpness(model, x, y, F.cross_entropy, radii=radii, n_directions=n, seed=2)
    assert float(value.value) == pytest.approx(sum(measured.values()) / len(radii), rel=1e-10)
    with torch.no_grad():
        assert float(value.loss) == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-12)


def test_output_modules_after_the_last_layer_are_applied_per_perturbation():
    base = _mlp((6, 8, 3))
    with_log_softmax = nn.Sequential(*base, nn.LogSoftmax(dim=1))
    x, y = _data(30, 6, 3)
    plain = sharpness(base, x, y, F.cross_entropy, radii=(0.5,), n_directions=6)
    logged = sharpness(with_log_softmax, x, y, F.nll_loss, radii=(0.5,), n_directions=6)
    assert logged[0.5] == pytest.approx(plain[0.5], rel=1e-10)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(radii=(), n_directions=4, directions="isotropic"), "radii"),
        (dict(radii=(0.1, -1.0), n_directions=4, directions="isotropic"), "radii"),
        (dict(radii=(0.1,), n_directions=0, directions="isotropic"), "n_directions"),
        (dict(radii=(0.1,), n_directions=4, directions="gaussian"), "directions"),
    ],
)
def test_bad_options_are_rejected_with_the_option_named(options, match):
    with pytest.raises(ValueError, match=match):
        check_options(**options)
    with pytest.raises(ValueError, match=match):
        get_objective("sharpness", **options)


@pytest.mark.parametrize("group", ["rescale", "gl-data"])
def test_teleport_raises_or_lowers_sharpness_and_keeps_the_loss(group):
    batch = 12 if group == "gl-data" else 64  # gl-data is exact on batches no larger than the width
    lr = 0.01 if group == "gl-data" else 0.05  # its orbits bend more: long steps overshoot
    x, y = _data(batch, 6, 3, seed=2)
    kwargs = {"radii": [0.5, 1.0], "n_directions": 8, "seed": 1}
    for seed in range(3):
        model = _mlp((6, 16, 12, 3), seed=seed)
        for direction in ("increase", "decrease"):
            moved = copy.deepcopy(model)
            # No bound on the move's size: at batch 12 gl-data moves these weights by up to several times
            # their norm, which the default acceptance rule rejects; the objective is what is tested here.
            record = teleport(moved, x, y, F.cross_entropy, group=group, objective="sharpness", direction=direction,
                              steps=5, lr=lr, normalize_step=True, objective_kwargs=kwargs, max_weight_change=math.inf)
            assert record.accepted
            assert abs(record.relative_loss_change) <= record.tolerance
            if direction == "increase":
                assert record.objective_after > record.objective_before
            else:
                assert record.objective_after < record.objective_before
            # the record's numbers are the objective's: re-measure with the same directions
            remeasured = sharpness(moved, x, y, F.cross_entropy, radii=kwargs["radii"], n_directions=8, seed=1)
            assert sum(remeasured.values()) / 2 == pytest.approx(record.objective_after, rel=1e-6)
