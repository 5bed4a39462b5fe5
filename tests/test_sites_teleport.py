"""teleport() on models that are not MLP nn.Sequentials: the dispatch to the site path, ascent and
descent of the objective for every site group, the covariant search's cost in model evaluations, the
gradient covariance it rests on, and the in-place move with its check and restore."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from test_sites_families import Case, random_cnn, random_resnet, random_transformer, warm_up
from torch import Tensor, nn

from telebench.symmetry import SymmetryError, TeleportRecord, find_symmetries, teleport
from telebench.symmetry.sites import actions
from telebench.symmetry.sites.search import Batch

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
GROUP_MODELS: dict[str, list[Callable[[int], Case]]] = {
    "channel-rescale": [random_cnn, random_resnet, random_transformer],
    "norm-scale": [random_resnet, lambda s: random_cnn(s, batch_norm=True)],
    "attention": [lambda s: random_transformer(s, "manual"), lambda s: random_transformer(s, "mha")],
    "auto": [random_cnn, random_resnet, random_transformer],
}


def _setup(make: Callable[[int], Case], seed: int, dtype: torch.dtype = F64, batch: int = 16
           ) -> tuple[nn.Module, Tensor, Tensor, Callable[[int], Tensor]]:
    model, inputs, classes = make(seed)
    model = model.to(dtype)
    warm_up(model, lambda n: _cast(inputs(n), dtype))
    g = torch.Generator().manual_seed(seed)
    return model, _cast(inputs(batch), dtype), torch.randint(0, classes, (batch,), generator=g), inputs


def _cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x.to(dtype) if x.is_floating_point() else x


@pytest.mark.parametrize("group", list(GROUP_MODELS))
@pytest.mark.parametrize("direction", ["increase", "decrease"])
def test_grad_norm_ascent_raises_and_descent_lowers_the_objective(group: str, direction: str) -> None:
    for i, make in enumerate(GROUP_MODELS[group]):
        for seed in range(3):
            model, x, y, _ = _setup(make, seed)
            record = teleport(model, x, y, F.cross_entropy, group=group, direction=direction, steps=10, lr=0.02,
                              normalize_step=True)
            assert isinstance(record, TeleportRecord) and record.group == group and record.accepted
            assert abs(record.relative_loss_change) <= 1e-9
            gain = record.objective_after - record.objective_before
            assert (gain > 0) if direction == "increase" else (gain < 0), (group, i, seed, record.to_dict())
            assert record.steps_taken == 10 and len(record.transforms) > 0


@pytest.mark.parametrize("make", [random_cnn, random_resnet, random_transformer])
def test_a_ten_step_search_evaluates_the_model_twice(make: Callable[[int], Case]) -> None:
    """One gradient for the search, one for the invariance check at the written weights: covariance."""
    model, x, y, _ = _setup(make, 0, torch.float32)
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    teleport(model, x, y, F.cross_entropy, group="auto", steps=10, lr=1e-2)  # first call: discovery too
    calls.clear()
    record = teleport(model, x, y, F.cross_entropy, group="auto", steps=10, lr=1e-2)
    assert len(calls) == 2 and record.steps_taken == 10


@pytest.mark.parametrize("make", [random_cnn, random_resnet, random_transformer])
def test_the_gradient_moves_covariantly(make: Callable[[int], Case]) -> None:
    model, x, y, _ = _setup(make, 1)
    sites = list(find_symmetries(model, x).sites)
    g = torch.Generator().manual_seed(0)
    elements = [actions.element(s, 0.5 * actions.sample(s, x.new_zeros(()).double(), g)) for s in sites]
    _, before = Batch.of(model, (x,), y, F.cross_entropy).gradients()
    actions.write(model, sites, elements)
    _, after = Batch.of(model, (x,), y, F.cross_entropy).gradients()
    predicted = {**before, **actions.move(before, sites, elements, covector=True)}
    for name, grad in after.items():
        assert torch.allclose(predicted[name], grad, rtol=1e-8, atol=1e-12 * float(grad.abs().max() + 1)), name


def test_the_default_group_on_a_cnn_is_channel_rescale_and_mlps_keep_their_path() -> None:
    model, x, y, _ = _setup(random_cnn, 0)
    assert teleport(model, x, y, F.cross_entropy, steps=2).group == "channel-rescale"
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    xs, ys = torch.randn(8, 3, dtype=F64), torch.randint(0, 2, (8,))
    record = teleport(mlp, xs, ys, F.cross_entropy, group="rescale", steps=2)
    assert record.group == "rescale" and [t.layer for t in record.transforms] == [0]
    assert teleport(mlp, xs, ys, F.cross_entropy, group="auto", steps=2).group == "auto"  # a site group, by name
    conv_seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 2)).double()
    assert teleport(conv_seq, torch.randn(4, 1, 6, 6, dtype=F64), torch.randint(0, 2, (4,)), F.cross_entropy,
                    steps=2).group == "channel-rescale"


def test_norm_scale_in_train_mode_keeps_eval_mode_exact() -> None:
    model, x, y, inputs = _setup(random_resnet, 2)
    fresh = inputs(6).double()
    model.eval()
    before = model(fresh)
    model.train()
    record = teleport(model, x, y, F.cross_entropy, group="norm-scale", steps=10, lr=0.2, normalize_step=True)
    assert record.accepted and record.relative_weight_change > 1e-3
    model.eval()
    assert torch.allclose(model(fresh), before, rtol=1e-10, atol=1e-12)


def test_a_rejected_move_restores_weights_buffers_and_eps_bit_for_bit() -> None:
    model, x, y, _ = _setup(random_resnet, 0)
    state = copy.deepcopy(model.state_dict())
    eps = [m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    # g = 1 + θ with θ < -1 flips channels' signs through ReLU: a move that changes the function
    record = teleport(model, x, y, F.cross_entropy, group="auto", steps=1, lr=50.0, normalize_step=True,
                      parametrization="linear")
    assert not record.accepted and record.transforms == [] and record.rejection in ("loss-change", "non-finite")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert eps == [m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_random_mode_held_out_and_the_record() -> None:
    model, x, y, inputs = _setup(random_transformer, 0)
    held = (inputs(10), torch.randint(0, 2, (10,)))
    g = torch.Generator().manual_seed(0)
    record = teleport(model, x, y, F.cross_entropy, group="attention", mode="random", steps=5, lr=0.05,
                      normalize_step=True, held_out=held, generator=g)
    assert record.accepted and record.mode == "random" and 0 < record.algebra_norm <= 0.25 + 1e-12
    assert record.held_out_relative_loss_change is not None and abs(record.held_out_relative_loss_change) < 1e-9
    fixed = teleport(model, x, y, F.cross_entropy, group="attention", mode="random", random_scale=0.3, generator=g)
    assert fixed.algebra_norm == pytest.approx(0.3, rel=1e-6)
    assert set(record.to_dict()) >= {"group", "objective_before", "objective_after", "relative_loss_change"}


def test_dropout_masks_are_pinned_and_the_global_rng_untouched() -> None:
    model, x, y, _ = _setup(lambda s: random_cnn(3), 0)  # seed 3 draws dropout 0.3
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
    model.train()
    state = torch.get_rng_state()
    record = teleport(model, x, y, F.cross_entropy, group="auto", steps=5, lr=0.05, normalize_step=True)
    assert record.accepted and abs(record.relative_loss_change) < 1e-9
    assert torch.equal(state, torch.get_rng_state())


def test_what_the_site_path_refuses() -> None:
    model, x, y, _ = _setup(random_cnn, 0)
    with pytest.raises(SymmetryError, match="MLP-only"):
        teleport(model, x, y, F.cross_entropy, group="gl-data")
    with pytest.raises(SymmetryError, match="gradient alone"):
        teleport(model, x, y, F.cross_entropy, group="auto", objective="sharpness")
    with pytest.raises(SymmetryError, match="no exact 'attention' site"):
        teleport(model, x, y, F.cross_entropy, group="attention")
    with pytest.raises(ValueError, match="direction"):
        teleport(model, x, y, F.cross_entropy, group="auto", direction="up")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
@pytest.mark.parametrize("make", [random_cnn, random_resnet, random_transformer])
def test_site_teleport_on_cuda(make: Callable[[int], Case]) -> None:
    model, x, y, inputs = _setup(make, 0, torch.float32)
    model, x, y = model.cuda(), x.cuda(), y.cuda()
    fresh = _cast(inputs(6), torch.float32).cuda()
    model.eval()
    before = model(fresh)
    model.train()
    record = teleport(model, x, y, F.cross_entropy, group="auto", steps=10, lr=0.05, normalize_step=True)
    assert record.accepted and record.objective_after > record.objective_before
    model.eval()
    assert float((model(fresh) - before).norm() / before.norm()) < 1e-5
