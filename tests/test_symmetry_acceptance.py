"""The acceptance rule (telebench.symmetry.acceptance): which moves are kept, and why one was not."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from telebench.symmetry import get_group, teleport
from telebench.symmetry.acceptance import (
    GL_DATA_MAX_WEIGHT_CHANGE,
    HELD_OUT_LOSS_CHANGE,
    LOSS_CHANGE,
    NON_FINITE,
    REJECTIONS,
    WEIGHT_CHANGE,
    Acceptance,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(widths, make=lambda: nn.LeakyReLU(0.1), dtype=torch.float64, seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(make())
    return nn.Sequential(*layers).to(dtype)


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def unchanged(model: nn.Module, before: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))


def huge_move():
    """A gl-data teleport whose least-squares factor blows up: a tiny algebra step, 8x the weights' norm."""
    model = mlp((6, 9, 7, 5, 3), seed=5)
    torch.manual_seed(5)
    x, y = torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
    return model, x, y, dict(group="gl-data", lr=0.05, normalize_step=True)


def test_the_verdict_checks_in_order_and_names_the_first_failure():
    rule = Acceptance(tolerance=1e-2, max_weight_change=3.0, held_out_tolerance=0.1)
    assert rule.verdict(1e-3, 0.5, 1.0, 0.01) is None
    assert rule.verdict(math.nan, 0.5, 1.0, None) == NON_FINITE
    assert rule.verdict(1e-3, 0.5, math.inf, None) == NON_FINITE
    assert rule.verdict(1e-3, 0.5, 1.0, math.nan) == NON_FINITE
    assert rule.verdict(0.5, 10.0, 1.0, 1.0) == LOSS_CHANGE  # the loss comes before the size
    assert rule.verdict(1e-3, 10.0, 1.0, 1.0) == WEIGHT_CHANGE
    assert rule.verdict(1e-3, 0.5, 1.0, -0.2) == HELD_OUT_LOSS_CHANGE
    assert Acceptance(1e-2).verdict(1e-3, 1e6, 1.0, 5.0) is None  # no bounds but the loss's
    assert set(REJECTIONS) == {NON_FINITE, LOSS_CHANGE, WEIGHT_CHANGE, HELD_OUT_LOSS_CHANGE}


def test_a_huge_gl_data_move_is_rejected_by_default_and_leaves_the_weights_bit_identical():
    model, x, y, kwargs = huge_move()
    before = snapshot(model)
    rec = teleport(model, x, y, F.cross_entropy, **kwargs)
    assert not rec.accepted and rec.rejection == WEIGHT_CHANGE and rec.transforms == []
    assert rec.relative_weight_change > GL_DATA_MAX_WEIGHT_CHANGE and rec.max_weight_change == GL_DATA_MAX_WEIGHT_CHANGE
    assert abs(rec.relative_loss_change) < rec.tolerance  # the batch loss alone would have let it through
    assert unchanged(model, before)
    kept = teleport(model, x, y, F.cross_entropy, **kwargs, max_weight_change=math.inf)
    assert kept.accepted and kept.rejection is None and kept.max_weight_change is None
    assert kept.relative_weight_change == pytest.approx(rec.relative_weight_change, rel=1e-12)
    assert not unchanged(model, before)


def test_the_default_bound_is_the_groups():
    assert get_group("gl-data").default_max_weight_change(torch.float32) == GL_DATA_MAX_WEIGHT_CHANGE
    for name in ("rescale", "linear"):  # exact on every input: no bound on the size of the move
        assert get_group(name).default_max_weight_change(torch.float64) == math.inf
    model = mlp((8, 10, 9, 3), nn.ReLU)
    torch.manual_seed(1)
    x, y = torch.randn(50, 8, dtype=torch.float64), torch.randint(0, 3, (50,))
    rec = teleport(model, x, y, F.cross_entropy, group="rescale", lr=1.0, normalize_step=True, steps=20)
    assert rec.accepted and rec.relative_weight_change > GL_DATA_MAX_WEIGHT_CHANGE and rec.max_weight_change is None
    tight = teleport(copy.deepcopy(model), x, y, F.cross_entropy, group="rescale", lr=1.0, normalize_step=True,
                     steps=20, max_weight_change=0.1)
    assert not tight.accepted and tight.rejection == WEIGHT_CHANGE and tight.max_weight_change == 0.1


@pytest.mark.parametrize(
    "group,kwargs,reason",
    [
        ("linear", dict(lr=1e6), NON_FINITE),  # overflow
        ("gl-data", dict(lr=0.1, normalize_step=True, tolerance=0.0), LOSS_CHANGE),  # least squares is not exact
    ],
)
def test_each_rejection_is_recorded(group, kwargs, reason):
    model = mlp((20, 16, 10, 10), nn.Identity if group == "linear" else (lambda: nn.LeakyReLU(0.1)),
                dtype=torch.float32, seed=4)
    x, y = torch.randn(200, 20), torch.randint(0, 10, (200,))
    before = snapshot(model)
    rec = teleport(model, x, y, F.cross_entropy, group=group, **kwargs)
    assert not rec.accepted and rec.rejection == reason and unchanged(model, before)
    assert json.loads(json.dumps(rec.to_dict()))["rejection"] == reason


def test_a_held_out_tolerance_rejects_a_move_that_changes_the_function_off_the_batch():
    model = mlp((6, 12, 10, 3), seed=2)
    torch.manual_seed(2)
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))  # batch 8 ≤ widths: exact on x
    held = (torch.randn(100, 6, dtype=torch.float64), torch.randint(0, 3, (100,)))
    before = snapshot(model)
    measured = teleport(copy.deepcopy(model), x, y, F.cross_entropy, group="gl-data", lr=0.05, normalize_step=True,
                        held_out=held)
    change = abs(measured.held_out_relative_loss_change)
    assert measured.accepted and measured.held_out_tolerance is None and change > 1e-4  # held_out alone only measures
    rec = teleport(model, x, y, F.cross_entropy, group="gl-data", lr=0.05, normalize_step=True, held_out=held,
                   held_out_tolerance=change / 2)
    assert not rec.accepted and rec.rejection == HELD_OUT_LOSS_CHANGE and rec.held_out_tolerance == change / 2
    assert rec.held_out_relative_loss_change == pytest.approx(measured.held_out_relative_loss_change, rel=1e-9)
    assert unchanged(model, before)
    loose = teleport(model, x, y, F.cross_entropy, group="gl-data", lr=0.05, normalize_step=True, held_out=held,
                     held_out_tolerance=2 * change)
    assert loose.accepted


def test_exact_groups_pass_a_tight_held_out_tolerance():
    model = mlp((8, 10, 9, 3), nn.ReLU)
    torch.manual_seed(3)
    x, y = torch.randn(50, 8, dtype=torch.float64), torch.randint(0, 3, (50,))
    held = (torch.randn(70, 8, dtype=torch.float64), torch.randint(0, 3, (70,)))
    rec = teleport(model, x, y, F.cross_entropy, group="rescale", lr=0.05, held_out=held, held_out_tolerance=1e-9)
    assert rec.accepted and abs(rec.held_out_relative_loss_change) < 1e-12


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(held_out_tolerance=0.1), "held_out_tolerance needs a held-out batch"),
        (dict(max_weight_change=-1.0), "max_weight_change must be a non-negative number"),
        (dict(max_weight_change=math.nan), "max_weight_change must be a non-negative number"),
        (dict(tolerance=-1e-3), "tolerance must be a non-negative number"),
    ],
)
def test_bad_acceptance_options_get_one_clear_sentence(kwargs, pattern):
    model = mlp((4, 5, 2), nn.ReLU, dtype=torch.float32)
    before = snapshot(model)
    with pytest.raises(ValueError, match=pattern):
        teleport(model, torch.randn(6, 4), torch.randint(0, 2, (6,)), F.cross_entropy, **kwargs)
    assert unchanged(model, before)
