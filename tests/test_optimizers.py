"""make_optimizer per name, kwarg checking, and the reset/keep/transport state policies."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from telebench.errors import UserError
from telebench.training.optimizers import (
    OPTIMIZERS,
    apply_state_policy,
    make_optimizer,
    optimizer_kwargs_allowed,
)
from telebench.training.specs import OptimizerSpec, freeze

CLASSES = {
    "sgd": torch.optim.SGD,
    "momentum": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
}


def _model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(8, 4, generator=generator), torch.randn(8, 2, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_name_builds_its_torch_class_and_trains(name: str) -> None:
    model = _model()
    optimizer = make_optimizer(OptimizerSpec(name, lr=0.05), model.parameters())
    assert type(optimizer) is CLASSES[name]
    assert optimizer.param_groups[0]["lr"] == 0.05
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, optimizer, 3)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_momentum_defaults_to_point_nine_and_can_be_overridden() -> None:
    params = list(_model().parameters())
    assert make_optimizer(OptimizerSpec("momentum", 0.1), params).param_groups[0]["momentum"] == 0.9
    assert make_optimizer(OptimizerSpec("sgd", 0.1), params).param_groups[0]["momentum"] == 0
    custom = make_optimizer(
        OptimizerSpec("momentum", 0.1, freeze({"momentum": 0.5, "nesterov": True})), params
    )
    assert custom.param_groups[0]["momentum"] == 0.5 and custom.param_groups[0]["nesterov"] is True


def test_kwargs_pass_through_including_yaml_lists() -> None:
    params = list(_model().parameters())
    adam = make_optimizer(OptimizerSpec("adam", 1e-3, freeze({"betas": [0.8, 0.95], "eps": 1e-6})), params)
    assert tuple(adam.param_groups[0]["betas"]) == (0.8, 0.95) and adam.param_groups[0]["eps"] == 1e-6
    rms = make_optimizer(OptimizerSpec("rmsprop", 1e-3, freeze({"alpha": 0.9})), params)
    assert rms.param_groups[0]["alpha"] == 0.9


def test_allowed_kwargs_come_from_torch() -> None:
    assert {"betas", "eps", "weight_decay", "amsgrad"} <= optimizer_kwargs_allowed("adam")
    assert "momentum" in optimizer_kwargs_allowed("momentum")
    assert "lr" not in optimizer_kwargs_allowed("sgd") and "params" not in optimizer_kwargs_allowed("sgd")


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        (
            OptimizerSpec("adamw", 1e-3),
            r"'adamw' is unknown \(did you mean 'adam'\?\); use one of sgd, momentum",
        ),
        (
            OptimizerSpec("adam", 1e-3, freeze({"beta": 0.9})),
            r"no option 'beta' \(did you mean 'betas'\?\); allowed kwargs: .*amsgrad",
        ),
        (OptimizerSpec("sgd", 1e-3, freeze({"momentum": -1.0})), r"rejected its kwargs .*momentum"),
        (OptimizerSpec("adagrad", 0.0), r"needs a positive lr, got 0.0"),
        (OptimizerSpec("rmsprop", -1e-3), r"needs a positive lr"),
    ],
)
def test_bad_optimizer_specs_are_user_errors(spec: OptimizerSpec, pattern: str) -> None:
    with pytest.raises(UserError, match=pattern):
        make_optimizer(spec, _model().parameters())
    if spec.name not in OPTIMIZERS:
        with pytest.raises(UserError):
            optimizer_kwargs_allowed(spec.name)


STATEFUL = ["momentum", "adagrad", "rmsprop", "adam"]


@pytest.mark.parametrize("name", STATEFUL)
def test_reset_starts_the_state_from_zero(name: str) -> None:
    spec = OptimizerSpec(name, lr=0.01)
    model = _model()
    optimizer = make_optimizer(spec, model.parameters())
    _train(model, optimizer, 4)
    assert len(optimizer.state) > 0

    fresh = apply_state_policy(optimizer, "reset", spec, model.parameters())
    assert fresh is not optimizer
    # Adagrad creates its (zero) accumulators eagerly; the others create state on their first step.
    for state in fresh.state.values():
        assert all(torch.count_nonzero(torch.as_tensor(v)) == 0 for v in state.values())
    assert all(p is q for p, q in zip(fresh.param_groups[0]["params"], model.parameters(), strict=True))

    # One step after the reset equals one step of an optimizer built from scratch at the same weights.
    twin = copy.deepcopy(model)
    _train(model, fresh, 1, seed=9)
    _train(twin, make_optimizer(spec, twin.parameters()), 1, seed=9)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters(), strict=True))


@pytest.mark.parametrize("name", STATEFUL)
def test_keep_leaves_the_state_alone(name: str) -> None:
    spec = OptimizerSpec(name, lr=0.01)
    model = _model()
    optimizer = make_optimizer(spec, model.parameters())
    _train(model, optimizer, 4)
    snapshot = copy.deepcopy(optimizer.state_dict())
    with torch.no_grad():  # a teleport modifies the weights in place
        model[0].weight.mul_(2.0)
    kept = apply_state_policy(optimizer, "keep", spec, model.parameters())
    assert kept is optimizer
    after = kept.state_dict()
    for key, state in snapshot["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after["state"][key][field])), (
                key,
                field,
            )


@pytest.mark.parametrize("name", STATEFUL)
def test_transport_maps_the_state_in_place_and_unknown_policies_are_user_errors(name: str) -> None:
    """Details and the maths are in tests/test_transport.py; here only the policy's contract."""
    spec = OptimizerSpec(name, lr=0.01)
    model = _model()
    optimizer = make_optimizer(spec, model.parameters())
    _train(model, optimizer, 4)
    snapshot = copy.deepcopy(optimizer.state_dict())
    s = torch.full((6,), 2.0)  # rescale the hidden units by 2: W0, b0 × 2, W1 ÷ 2
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        model[0].bias.mul_(2.0)
        model[2].weight.div_(2.0)
    moved = apply_state_policy(
        optimizer, "transport", spec, list(model.parameters()),
        [_Transform(0, torch.diag(s), torch.diag(1 / s))],
    )
    assert moved is optimizer
    first_moment = {"momentum": "momentum_buffer", "adam": "exp_avg"}
    second_moment = {"adagrad": "sum", "rmsprop": "square_avg", "adam": "exp_avg_sq"}
    w0 = 0  # state index of the first weight: its gradient scales by 1/2, its second moment by 1/4
    if name in first_moment:
        old = snapshot["state"][w0][first_moment[name]]
        assert torch.allclose(optimizer.state_dict()["state"][w0][first_moment[name]], old / 2)
    if name in second_moment:
        old = snapshot["state"][w0][second_moment[name]]
        assert torch.allclose(optimizer.state_dict()["state"][w0][second_moment[name]], old / 4)
    with pytest.raises(UserError, match=r"'restart' is unknown; use one of reset, keep, transport"):
        apply_state_policy(optimizer, "restart", spec, model.parameters())


@dataclass
class _Transform:
    layer: int
    left: torch.Tensor
    right: torch.Tensor
