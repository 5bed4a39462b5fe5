"""build_mlp: layer layout, activations, seeded and side-effect-free initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from telebench.errors import UserError
from telebench.training.models import ACTIVATIONS, build_mlp, count_parameters
from telebench.training.specs import ModelSpec

EXPECTED_TYPES = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
    "linear": nn.Identity,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def test_every_activation_is_covered() -> None:
    assert set(ACTIVATIONS) == set(EXPECTED_TYPES)


@pytest.mark.parametrize("activation", sorted(EXPECTED_TYPES))
def test_layout_alternates_linear_and_activation(activation: str) -> None:
    model = build_mlp(ModelSpec((5, 7, 4, 3), activation=activation), seed=0)
    assert isinstance(model, nn.Sequential) and len(model) == 5
    linears = [model[0], model[2], model[4]]
    assert all(type(layer) is nn.Linear for layer in linears)
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 7), (7, 4), (4, 3)]
    assert all(type(model[i]) is EXPECTED_TYPES[activation] for i in (1, 3))
    assert model(torch.rand(6, 5)).shape == (6, 3)


def test_leaky_slope_bias_flag_and_single_layer() -> None:
    model = build_mlp(ModelSpec((4, 6, 2), activation="leaky_relu", negative_slope=0.25, bias=False), seed=1)
    assert model[1].negative_slope == 0.25
    assert all(m.bias is None for m in model if isinstance(m, nn.Linear))
    assert count_parameters(model) == 4 * 6 + 6 * 2
    logistic = build_mlp(ModelSpec((3, 2)), seed=1)
    assert len(logistic) == 1 and isinstance(logistic[0], nn.Linear)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    spec = ModelSpec((784, 16, 10, 10))
    a, b, c = build_mlp(spec, seed=7), build_mlp(spec, seed=7), build_mlp(spec, seed=8)
    for (name, pa), pb, pc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name


def test_seeded_build_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_mlp(ModelSpec((20, 30, 5)), seed=4)
    assert torch.equal(torch.rand(3), expected)


def test_unseeded_build_follows_torch_manual_seed() -> None:
    torch.manual_seed(9)
    a = build_mlp(ModelSpec((6, 5, 2)))
    torch.manual_seed(9)
    b = build_mlp(ModelSpec((6, 5, 2)))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_init_is_uniform_within_one_over_sqrt_fan_in() -> None:
    model = build_mlp(ModelSpec((400, 300, 3)), seed=0)
    for layer in (model[0], model[2]):
        bound = 1 / math.sqrt(layer.in_features)
        for param in (layer.weight.detach(), layer.bias.detach()):
            assert float(param.abs().max()) <= bound
    weight = model[0].weight.detach()
    assert float(weight.mean()) == pytest.approx(0.0, abs=bound * 0.01)
    assert float(weight.std()) == pytest.approx(1 / math.sqrt(400) / math.sqrt(3), rel=0.01)  # uniform's std


def test_float64_build_matches_float32_up_to_rounding() -> None:
    spec = ModelSpec((8, 16, 4))
    single, double = build_mlp(spec, seed=3), build_mlp(spec, seed=3, dtype=torch.float64)
    for p32, p64 in zip(single.parameters(), double.parameters(), strict=True):
        assert p64.dtype == torch.float64
        assert torch.equal(p32, p64.float())


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        (
            ModelSpec((4, 2), activation="reluu"),
            r"'reluu' is unknown \(did you mean 'relu'\?\); use one of relu",
        ),
        (ModelSpec((4,)), r"at least an input and an output width"),
        (ModelSpec((4, 0, 2)), r"positive integers; 0 is not"),
        (ModelSpec((4, 2.5, 2)), r"positive integers; 2.5 is not"),  # type: ignore[arg-type]
    ],
)
def test_bad_specs_are_user_errors(spec: ModelSpec, pattern: str) -> None:
    with pytest.raises(UserError, match=pattern):
        build_mlp(spec, seed=0)
