"""teleport() checks its arguments first: every bad input gets one sentence naming the argument (ValueError,
or SymmetryError for the model's weights), and the failed call leaves the weights exactly as they were."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telebench.symmetry import SymmetryError, teleport
from telebench.training.model_families import CNN, Transformer


def mlp(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.LeakyReLU(0.1), nn.Linear(5, 3)).to(dtype)


def cnn(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return CNN(in_channels=1, image_size=8, channels=(4,), hidden=8, n_classes=3).to(dtype)


@dataclass
class Call:
    """One teleport call: the model, its positional batch and loss, and keywords."""

    model: nn.Module
    x: Any
    y: Any
    loss_fn: Any = F.cross_entropy
    kwargs: dict[str, Any] = field(default_factory=dict)


def mlp_call(dtype: torch.dtype = torch.float64, **kwargs: Any) -> Call:
    g = torch.Generator().manual_seed(1)
    return Call(mlp(dtype), torch.randn(6, 4, generator=g, dtype=dtype), torch.randint(0, 3, (6,), generator=g),
                kwargs=kwargs)


def cnn_call(dtype: torch.dtype = torch.float64, **kwargs: Any) -> Call:
    g = torch.Generator().manual_seed(1)
    return Call(cnn(dtype), torch.randn(4, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 3, (4,), generator=g),
                kwargs=kwargs)


def with_(call: Call, **changes: Any) -> Call:
    for key, value in changes.items():
        setattr(call, key, value)
    return call


def poisoned(call: Call, value: float) -> Call:
    with torch.no_grad():
        next(call.model.parameters()).view(-1)[0] = value
    return call


def inputs_with(call: Call, value: float) -> Call:
    call.x = call.x.clone()
    call.x.view(-1)[0] = value
    return call


def regression(call: Call, value: float) -> Call:
    y = torch.randn(len(call.x), 3, dtype=call.x.dtype, generator=torch.Generator().manual_seed(2))
    y[0, 0] = value
    return with_(call, y=y, loss_fn=F.mse_loss)


def second_layer(call: Call, **to: Any) -> Call:
    assert isinstance(call.model, nn.Sequential)
    call.model[2].to(**to)
    return call


MLP_CASES: dict[str, tuple[Callable[[], Call], type[Exception], str]] = {
    # inputs
    "wrong-width": (lambda: with_(mlp_call(), x=torch.randn(6, 7, dtype=torch.float64)), ValueError,
                    r"inputs has 7 features .* in_features=4"),
    "1-d-inputs": (lambda: with_(mlp_call(), x=torch.randn(4, dtype=torch.float64), y=torch.tensor(1)), ValueError,
                   r"inputs must be 2-D \(batch, features\).*unsqueeze"),
    "3-d-inputs": (lambda: with_(mlp_call(), x=torch.randn(6, 2, 4, dtype=torch.float64)), ValueError,
                   r"inputs must be 2-D \(batch, features\).*flatten"),
    "integer-inputs": (lambda: with_(mlp_call(), x=torch.randint(0, 3, (6, 4))), ValueError,
                       r"inputs must be floating point.*torch.int64"),
    "inputs-not-a-tensor": (lambda: with_(mlp_call(), x=[[0.0] * 4] * 6), ValueError, r"inputs must be a tensor"),
    "empty-batch": (lambda: with_(mlp_call(), x=torch.randn(0, 4, dtype=torch.float64),
                                  y=torch.zeros(0, dtype=torch.long)), ValueError, r"inputs is an empty batch"),
    "nan-inputs": (lambda: inputs_with(mlp_call(), math.nan), ValueError, r"inputs contain NaN or inf"),
    "inf-inputs": (lambda: inputs_with(mlp_call(), math.inf), ValueError, r"inputs contain NaN or inf"),
    "inputs-on-another-device": (lambda: with_(mlp_call(), x=torch.randn(6, 4, device="meta")), ValueError,
                                 r"inputs is on meta but the model is on cpu"),
    # targets
    "label-too-large": (lambda: with_(mlp_call(), y=torch.tensor([0, 1, 2, 3, 0, 1])), ValueError,
                        r"targets must be class indices in \[0, 3\)"),
    "negative-label": (lambda: with_(mlp_call(), y=torch.tensor([0, 1, 2, -1, 0, 1])), ValueError,
                       r"targets must be class indices in \[0, 3\)"),
    "int32-labels": (lambda: with_(mlp_call(), y=torch.zeros(6, dtype=torch.int32)), ValueError,
                     r"targets must be int64 class indices.*targets.long\(\)"),
    "label-count": (lambda: with_(mlp_call(), y=torch.zeros(5, dtype=torch.long)), ValueError,
                    r"targets has 5 rows .* the inputs have 6 rows"),
    "2-d-labels": (lambda: with_(mlp_call(), y=torch.zeros(6, 1, dtype=torch.long)), ValueError,
                   r"targets must be 1-D class indices"),
    "nan-regression-targets": (lambda: regression(mlp_call(), math.nan), ValueError, r"targets contain NaN or inf"),
    "held-out-width": (lambda: mlp_call(held_out=(torch.randn(3, 7, dtype=torch.float64), torch.zeros(3).long())),
                       ValueError, r"held_out\[0\] has 7 features"),
    "held-out-not-a-pair": (lambda: mlp_call(held_out=torch.randn(3, 4)), ValueError, r"held_out must be a pair"),
    "loss-not-callable": (lambda: with_(mlp_call(), loss_fn="cross_entropy"), ValueError, r"loss_fn must be callable"),
    # options
    "lr-string": (lambda: mlp_call(lr="0.1"), ValueError, r"lr must be a positive finite number, got '0.1' \(str\)"),
    "lr-nan": (lambda: mlp_call(lr=math.nan), ValueError, r"lr must be a positive finite number, got nan"),
    "steps-string": (lambda: mlp_call(steps="10"), ValueError, r"steps must be a non-negative integer, got '10' \(str\)"),
    "steps-float": (lambda: mlp_call(steps=2.5), ValueError, r"steps must be a non-negative integer, got 2.5 \(float\)"),
    "tolerance-string": (lambda: mlp_call(tolerance="1e-3"), ValueError,
                         r"tolerance must be a non-negative number or None, got '1e-3' \(str\)"),
    "tolerance-nan": (lambda: mlp_call(tolerance=math.nan), ValueError, r"tolerance must be a non-negative number"),
    "tolerance-negative": (lambda: mlp_call(tolerance=-1e-3), ValueError, r"tolerance must be a non-negative number"),
    "cap-string": (lambda: mlp_call(cap="5"), ValueError, r"cap must be a number .* got '5' \(str\)"),
    "cap-nan": (lambda: mlp_call(cap=math.nan), ValueError, r"cap must be a number"),
    "random-scale-negative": (lambda: mlp_call(mode="random", random_scale=-5), ValueError,
                              r"random_scale must be a positive finite number or None, got -5 \(int\)"),
    "random-scale-string": (lambda: mlp_call(mode="random", random_scale="1"), ValueError,
                            r"random_scale must be a positive finite number"),
    "random-scale-inf": (lambda: mlp_call(mode="random", random_scale=math.inf), ValueError,
                         r"random_scale must be a positive finite number"),
    "max-weight-change-negative": (lambda: mlp_call(max_weight_change=-1.0), ValueError,
                                   r"max_weight_change must be a non-negative number"),
    "max-weight-change-nan": (lambda: mlp_call(max_weight_change=math.nan), ValueError,
                              r"max_weight_change must be a non-negative number"),
    "held-out-tolerance-nan": (lambda: mlp_call(held_out_tolerance=math.nan), ValueError,
                               r"held_out_tolerance must be a non-negative number"),
    "held-out-tolerance-negative": (lambda: mlp_call(held_out_tolerance=-0.1), ValueError,
                                    r"held_out_tolerance must be a non-negative number"),
    # the model
    "nan-weights": (lambda: poisoned(mlp_call(), math.nan), ValueError, r"parameter '0.weight' contains NaN or inf"),
    "inf-weights": (lambda: poisoned(mlp_call(), -math.inf), ValueError, r"parameter '0.weight' contains NaN or inf"),
    "float16-model": (lambda: mlp_call(torch.float16), SymmetryError,
                      r"weights are torch.float16, but teleport needs float32 or float64 weights.*model.float\(\)"),
    "bfloat16-model": (lambda: mlp_call(torch.bfloat16), SymmetryError,
                       r"weights are torch.bfloat16, but teleport needs float32 or float64 weights"),
    "mixed-dtypes": (lambda: second_layer(mlp_call(torch.float32), dtype=torch.float64), SymmetryError,
                     r"the model's parameters mix dtypes \['torch.float32', 'torch.float64'\]"),
    "mixed-devices": (lambda: second_layer(mlp_call(), device="meta"), SymmetryError,
                      r"the model's parameters lie on several devices \['cpu', 'meta'\]"),
}

SITE_CASES: dict[str, tuple[Callable[[], Call], type[Exception], str]] = {
    "wrong-channels": (lambda: with_(cnn_call(), x=torch.randn(4, 3, 8, 8, dtype=torch.float64)), ValueError,
                       r"the model cannot run on inputs of shape \(4, 3, 8, 8\): RuntimeError: "),
    "empty-batch": (lambda: with_(cnn_call(), x=torch.randn(0, 1, 8, 8, dtype=torch.float64),
                                  y=torch.zeros(0, dtype=torch.long)), ValueError, r"inputs is an empty batch"),
    "nan-inputs": (lambda: inputs_with(cnn_call(), math.nan), ValueError, r"inputs contain NaN or inf"),
    "inputs-on-another-device": (lambda: with_(cnn_call(), x=torch.randn(4, 1, 8, 8, device="meta")), ValueError,
                                 r"inputs is on meta but the model is on cpu"),
    "negative-label": (lambda: with_(cnn_call(), y=torch.tensor([0, -3, 1, 2])), ValueError,
                       r"targets must be class indices in \[0, n_classes\)"),
    "label-too-large": (lambda: with_(cnn_call(), y=torch.tensor([0, 3, 1, 2])), ValueError,
                        r"targets must be class indices in \[0, n_classes\) of the model's output.*out of bounds"),
    "label-count": (lambda: with_(cnn_call(), y=torch.zeros(3, dtype=torch.long)), ValueError,
                    r"targets has 3 rows .* the inputs have 4 rows"),
    "int32-labels": (lambda: with_(cnn_call(), y=torch.zeros(4, dtype=torch.int32)), ValueError,
                     r"targets must be int64 class indices"),
    "lr-string": (lambda: cnn_call(lr="0.1"), ValueError, r"lr must be a positive finite number, got '0.1' \(str\)"),
    "tolerance-nan": (lambda: cnn_call(tolerance=math.nan), ValueError, r"tolerance must be a non-negative number"),
    "random-scale-negative": (lambda: cnn_call(mode="random", random_scale=-5), ValueError,
                              r"random_scale must be a positive finite number"),
    "nan-weights": (lambda: poisoned(cnn_call(), math.nan), ValueError,
                    r"parameter 'convs.0.weight' contains NaN or inf"),
    "float16-model": (lambda: cnn_call(torch.float16), SymmetryError,
                      r"teleport needs float32 or float64 weights.*model.float\(\)"),
}


def snapshot(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_unchanged(model: nn.Module, before: list[Tensor]) -> None:
    params = list(model.parameters())
    assert len(params) == len(before)
    for old, new in zip(before, params, strict=True):
        assert old.dtype == new.dtype and old.device == new.device
        if not new.is_meta:  # bit for bit, NaN included
            assert torch.equal(old.view(-1).view(torch.uint8), new.detach().view(-1).view(torch.uint8))


def run_bad(make: Callable[[], Call], error: type[Exception], pattern: str) -> None:
    call = make()
    before = snapshot(call.model)
    with pytest.raises(error, match=pattern) as caught:
        teleport(call.model, call.x, call.y, call.loss_fn, **call.kwargs)
    assert "\n" not in str(caught.value)  # one sentence, not a traceback's worth
    assert_unchanged(call.model, before)


@pytest.mark.parametrize("case", list(MLP_CASES))
def test_a_bad_mlp_call_gets_one_sentence_and_changes_nothing(case: str) -> None:
    run_bad(*MLP_CASES[case])


@pytest.mark.parametrize("case", list(SITE_CASES))
def test_a_bad_site_call_gets_one_sentence_and_changes_nothing(case: str) -> None:
    run_bad(*SITE_CASES[case])


def test_an_untraceable_model_keeps_its_own_error() -> None:
    """The site path probes the batch only after discovery failed, and only blames the batch if the model's
    own forward fails on it too."""

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x: Tensor) -> Tensor:
            h = self.a(x)
            return self.b(h if h.sum() > 0 else -h)  # data-dependent control flow: fx cannot trace it

    torch.manual_seed(0)
    model = Branchy().double()
    with pytest.raises(SymmetryError, match="torch.fx cannot trace Branchy"):
        teleport(model, torch.randn(6, 4, dtype=torch.float64), torch.zeros(6, dtype=torch.long), F.cross_entropy)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_valid_mlp_calls_still_teleport(dtype: torch.dtype) -> None:
    call = mlp_call(dtype)
    fresh = torch.randn(10, 4, dtype=dtype, generator=torch.Generator().manual_seed(3))
    out = call.model(fresh).detach()
    before = snapshot(call.model)
    record = teleport(call.model, call.x, call.y, F.cross_entropy, lr=0.1, normalize_step=True)
    assert record.accepted and record.objective_after > record.objective_before
    assert any(not torch.equal(a, b) for a, b in zip(before, call.model.parameters(), strict=True))
    assert torch.allclose(call.model(fresh), out, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_valid_cnn_calls_still_teleport(dtype: torch.dtype) -> None:
    call = cnn_call(dtype)
    record = teleport(call.model, call.x, call.y, F.cross_entropy, group="channel-rescale", lr=0.05,
                      normalize_step=True, steps=3)
    assert record.accepted and record.objective_after > record.objective_before


def test_what_stays_allowed() -> None:
    """Inputs an MLP takes through a leading nn.Flatten, float32 inputs to a float64 model, cross-entropy's
    ignore_index, soft labels, a zero tolerance, and integer token ids for a site model."""
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.LeakyReLU(0.1), nn.Linear(5, 3)).double()
    x = torch.randn(6, 1, 4, 4)  # float32 into a float64 model: cast, as before
    assert teleport(flat, x, torch.tensor([0, 1, 2, -100, 1, 0]), F.cross_entropy, steps=2).accepted
    soft = torch.softmax(torch.randn(6, 3, dtype=torch.float64), 1)
    assert teleport(flat, x, soft, F.cross_entropy, steps=2).accepted
    assert teleport(mlp(), torch.randn(6, 4, dtype=torch.float64), torch.zeros(6).long(), F.cross_entropy,
                    steps=0, tolerance=0.0).accepted
    torch.manual_seed(0)
    model = Transformer(vocab=8, seq_len=4, d_model=8, heads=2, layers=1, d_ff=8, n_classes=3).double()
    tokens = torch.randint(0, 8, (5, 4))
    record = teleport(model, tokens, torch.randint(0, 3, (5,)), F.cross_entropy, group="channel-rescale", steps=2)
    assert record.accepted


def test_sums_that_overflow_are_not_taken_for_non_finite_values() -> None:
    """The value checks read reductions (sums, L1 norms) that overflow for huge finite tensors; those
    fall back to the exact test and pass, while a true inf is still named."""
    from telebench.symmetry.arguments import check_teleport
    from telebench.symmetry.search_types import SearchOptions

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.fill_(3e38)
    x = torch.full((5, 4), 3e38)
    settings = SearchOptions(steps=1, lr=0.1)
    check_teleport(model, x, torch.zeros(5).long(), F.cross_entropy, (x, torch.ones(5).long()), settings,
                   "optimize", False)
    with torch.no_grad():
        model[2].bias[1] = math.inf
    with pytest.raises(ValueError, match=r"parameter '2.bias' contains NaN or inf"):
        check_teleport(model, x, torch.zeros(5).long(), F.cross_entropy, None, settings, "optimize", False)
