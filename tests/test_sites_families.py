"""Model families (telebench/training/model_families.py) and the seeded random models the other
tests_sites_* files draw from: small CNNs, ResNets with BatchNorm and pre-norm transformers, each an
ordinary nn.Module subclass with its own forward."""

from __future__ import annotations

import random
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from telebench.errors import UserError
from telebench.training.model_families import CNN, ResNet, Transformer, build_model, factory

Case = tuple[nn.Module, Callable[[int], Tensor], int]
"""A model, inputs(batch) → a fresh batch, and its number of classes."""


def random_cnn(seed: int, batch_norm: bool | None = None) -> Case:
    r = random.Random(seed)
    stages = r.randint(1, 2)
    size, c_in, classes = 4 * 2 ** stages, r.randint(1, 3), r.randint(2, 4)
    spec = {"family": "cnn", "in_channels": c_in, "image_size": size,
            "channels": [r.randint(2, 5) for _ in range(stages)], "hidden": r.randint(3, 8),
            "n_classes": classes, "dropout": r.choice([0.0, 0.3]),
            "batch_norm": r.random() < 0.5 if batch_norm is None else batch_norm}
    model = build_model(spec, seed=seed)
    return model, lambda n: torch.randn(n, c_in, size, size), classes


def random_resnet(seed: int) -> Case:
    r = random.Random(seed)
    c_in, widths, blocks, classes = r.randint(1, 3), [r.randint(2, 4) for _ in range(r.randint(1, 2))], r.randint(1, 2), r.randint(2, 4)
    spec = {"family": "resnet", "in_channels": c_in, "widths": widths, "blocks": blocks, "n_classes": classes}
    return build_model(spec, seed=seed), lambda n: torch.randn(n, c_in, 8, 8), classes


def random_transformer(seed: int, attention: str | None = None) -> Case:
    r = random.Random(seed)
    heads, d_head, seq, classes = r.randint(1, 3), r.randint(2, 3), r.randint(3, 6), r.randint(2, 5)
    spec = {"family": "transformer", "vocab": 7, "seq_len": seq, "d_model": heads * d_head, "heads": heads,
            "layers": r.randint(1, 2), "d_ff": r.randint(3, 8), "n_classes": classes,
            "attention": attention or r.choice(["manual", "mha"]), "causal": r.random() < 0.5,
            "pool": r.choice(["last", "mean"])}
    return build_model(spec, seed=seed), lambda n: torch.randint(0, 7, (n, seq)), classes


def warm_up(model: nn.Module, inputs: Callable[[int], Tensor], steps: int = 3) -> None:
    """A few train-mode forwards, so BatchNorm's running statistics are not the defaults."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(inputs(8))


def test_each_family_builds_and_runs() -> None:
    for model, inputs, classes in (random_cnn(0), random_resnet(0), random_transformer(0)):
        assert not isinstance(model, nn.Sequential)
        assert model(inputs(3)).shape == (3, classes)
    assert isinstance(build_model({"family": "cnn"}, seed=0), CNN)
    assert isinstance(build_model({"family": "resnet"}, seed=0), ResNet)
    assert isinstance(build_model({"family": "transformer"}, seed=0), Transformer)


def test_a_seed_gives_the_same_weights_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a = build_model({"family": "resnet", "widths": [4]}, seed=3)
    b = build_model({"family": "resnet", "widths": [4]}, seed=3)
    c = build_model({"family": "resnet", "widths": [4]}, seed=4)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_build_model_moves_to_dtype_and_device() -> None:
    model = build_model({"family": "cnn", "image_size": 8, "channels": [2]}, seed=0, dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}


def _user_model(width: int = 3) -> nn.Module:
    return nn.Linear(width, 2)


def test_factory_builds_a_users_model(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("sites_user_models")
    module.make = _user_model  # type: ignore[attr-defined]
    module.not_a_model = lambda: 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sites_user_models", module)
    model = build_model({"family": "factory", "target": "sites_user_models:make", "kwargs": {"width": 5}}, seed=0)
    assert isinstance(model, nn.Linear) and model.in_features == 5
    assert isinstance(factory("sites_user_models:make"), nn.Linear)
    for target, message in [("sites_user_models", "package.module:function"), ("no_such_pkg_x:make", "cannot be loaded"),
                            ("sites_user_models:not_a_model", "not an nn.Module")]:
        with pytest.raises(UserError, match=message):
            factory(target)
    with pytest.raises(UserError, match="rejected its kwargs"):
        factory("sites_user_models:make", {"depth": 2})


@pytest.mark.parametrize("spec, message", [
    ({"channels": [2]}, "needs a 'family'"),
    ({"family": "vgg"}, "unknown"),
    ({"family": "cnn", "width": 3}, "does not take"),
    ({"family": "cnn", "image_size": 10, "channels": [2, 2]}, "divisible"),
    ({"family": "transformer", "d_model": 10, "heads": 3}, "divisible"),
    ({"family": "transformer", "attention": "flash"}, "attention"),
    ({"family": "factory"}, "target"),
])
def test_bad_specs_are_one_sentence_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_model(spec, seed=0)
