"""Optimizer-state transport through site teleports (docs/state-transport.md, "Transport commutes with
accumulation"): the transported state equals the state a run would hold had every gradient it saw been
taken at the teleported point. Covectors (momentum, exp_avg, grad_avg) for every site group; second
moments (AdaGrad's sum, Adam's exp_avg_sq, RMSprop's square_avg) and RMSprop's normalised momentum
for the diagonal groups, and for attention elements that are monomial (a permutation times scales).
AdaGrad starts from a zero accumulator here: transport moves initial_accumulator_value with the sum."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from test_sites_families import Case, random_cnn, random_resnet, random_transformer, warm_up
from torch import Tensor, nn

from telebench.errors import UserError
from telebench.symmetry import find_symmetries, teleport
from telebench.symmetry.sites import actions
from telebench.symmetry.sites.site import SiteSet
from telebench.symmetry.sites.teleport import last_sites
from telebench.symmetry.sites.transport import STATE_KINDS, _denominator, elements_of, transport_site_state
from telebench.training.transport import STATE_KINDS as MLP_STATE_KINDS

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
OPTIMIZERS: dict[str, Callable[[list[Tensor], float], torch.optim.Optimizer]] = {
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr, eps=1e-30, amsgrad=True),
    "adagrad": lambda p, lr: torch.optim.Adagrad(p, lr=lr, eps=1e-30),
    "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr, eps=1e-30, centered=True, momentum=0.9),
}
GROUPS: dict[str, Callable[[int], Case]] = {
    "channel-rescale": random_cnn, "norm-scale": random_resnet,
    "attention": lambda s: random_transformer(s, "manual"), "auto": random_transformer,
}


@dataclass
class Move:
    """A LayerTransform look-alike for hand-made elements."""

    layer: int
    left: Tensor
    right: Tensor


def _batches(inputs: Callable[[int], Tensor], classes: int, n: int) -> list[tuple[Tensor, Tensor]]:
    out = []
    for _ in range(n):
        x = inputs(12)
        out.append((x.double() if x.is_floating_point() else x, torch.randint(0, classes, (12,))))
    return out


def _step(model: nn.Module, opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor], seed: int) -> None:
    torch.manual_seed(seed)  # the same Dropout masks in both runs
    opt.zero_grad()
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    opt.step()


def _history(model: nn.Module, opt: torch.optim.Optimizer, batches: list[tuple[Tensor, Tensor]]) -> list[dict]:
    """Train on ``batches``, keeping the state (weights, buffers) each gradient was taken at."""
    snapshots = []
    for i, batch in enumerate(batches):
        snapshots.append(copy.deepcopy(model.state_dict()))
        _step(model, opt, batch, i)
    return snapshots


def _moved_run(template: nn.Module, name: str, sites: SiteSet, elements: list, snapshots: list[dict],
               batches: list[tuple[Tensor, Tensor]]) -> torch.optim.Optimizer:
    """The state of a run whose every gradient was taken at the moved point (lr 0: the weights are set).
    ``template`` is the model before the teleport: eps is not in a state_dict, and norm-scale moves it."""
    ref = copy.deepcopy(template)
    opt = OPTIMIZERS[name](list(ref.parameters()), 0.0)
    for i, (snap, batch) in enumerate(zip(snapshots, batches, strict=True)):
        ref.load_state_dict(snap)
        saved = actions.write(ref, list(sites.sites), elements)
        _step(ref, opt, batch, i)
        actions.restore(ref, saved)
    return opt


def _compare(model: nn.Module, opt: torch.optim.Optimizer, ref_opt: torch.optim.Optimizer, sites: SiteSet,
             monomial: bool = False) -> int:
    """Compare every state entry the doc says is exact: covectors always; second moments and normalised
    entries where every site moving the parameter is diagonal (or, with ``monomial``, everywhere)."""
    kinds = STATE_KINDS[type(opt)]
    names = {id(p): n for n, p in model.named_parameters()}
    ref_state = dict(zip(names.values(), [ref_opt.state[p] for p in ref_opt.param_groups[0]["params"]], strict=True))
    checked = 0
    for p, state in opt.state.items():
        name = names[id(p)]
        diagonal = monomial or all(s.diagonal for s in sites.sites if name in s.parameters)
        for key, value in state.items():
            if kinds.get(key) == "covector" or (diagonal and kinds.get(key) in ("second-moment", "normalised")):
                want, got = ref_state[name][key], value
                if kinds[key] == "normalised":  # G ⊘ d is rounding noise where the gradient is structurally 0
                    d = _denominator(ref_state[name])  # (MultiheadAttention's key bias: softmax ignores it)
                    keep = d > 1e-9 * float(d.max())
                    want, got = want[keep], got[keep]
                assert torch.allclose(got, want, rtol=1e-9, atol=1e-12 * float(want.abs().max() + 1)), (name, key)
                checked += 1
    return checked


def _setup(make: Callable[[int], Case], name: str, seed: int = 0
           ) -> tuple[nn.Module, torch.optim.Optimizer, list[tuple[Tensor, Tensor]], list[dict]]:
    model, inputs, classes = make(seed)
    model = model.double()
    warm_up(model, lambda n: inputs(n).double() if inputs(1).is_floating_point() else inputs(n))
    opt = OPTIMIZERS[name](list(model.parameters()), 1e-3)
    batches = _batches(inputs, classes, 3)
    return model, opt, batches, _history(model, opt, batches)


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_transport_equals_accumulating_at_the_teleported_point(group: str, name: str) -> None:
    model, opt, batches, snapshots = _setup(GROUPS[group], name)
    template = copy.deepcopy(model)
    x, y = batches[0]
    steps_before = {id(p): s.get("step") for p, s in opt.state.items()}
    record = teleport(model, x, y, F.cross_entropy, group=group, steps=4, lr=0.1, normalize_step=True)
    assert record.accepted and record.transforms
    transport_site_state(opt, model, record.transforms)
    sites = last_sites(model)
    assert sites is not None
    elements = elements_of(sites, record.transforms)
    ref = _moved_run(template, name, sites, elements, snapshots, batches)
    checked = _compare(model, opt, ref, sites)
    assert checked > 0 or (name == "adagrad" and group == "attention")  # a dense move has no exact AdaGrad rule
    assert steps_before == {id(p): s.get("step") for p, s in opt.state.items()}  # counters kept


def _monomial(site: actions.Site, g: torch.Generator) -> actions.Element:
    if site.diagonal:
        s = torch.rand(site.size, generator=g, dtype=F64) + 0.5
        return s, 1 / s
    blocks = []
    for _ in range(site.heads):
        perm = torch.eye(site.block, dtype=F64)[torch.randperm(site.block, generator=g)]
        blocks.append(perm * (torch.rand(site.block, generator=g, dtype=F64) + 0.5))
    m = torch.stack(blocks)
    return m, torch.linalg.inv(m)


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad"])
def test_second_moments_are_exact_for_monomial_attention_elements(name: str) -> None:
    model, opt, batches, snapshots = _setup(lambda s: random_transformer(s, "mha"), name, seed=1)
    sites = find_symmetries(model, batches[0][0], "attention")
    g = torch.Generator().manual_seed(0)
    elements = [_monomial(s, g) for s in sites.sites]
    template = copy.deepcopy(model)
    actions.write(model, list(sites.sites), elements)
    transforms = [Move(i, *actions.as_matrices(s, e)) for i, (s, e) in enumerate(zip(sites.sites, elements, strict=True))]
    transport_site_state(opt, model, transforms, sites)
    ref = _moved_run(template, name, sites, elements, snapshots, batches)
    assert _compare(model, opt, ref, sites, monomial=True) > 0


def test_the_state_tables_match_the_mlp_transport() -> None:
    assert STATE_KINDS == MLP_STATE_KINDS


def test_nothing_moved_nothing_to_do_and_unknown_optimizers_are_user_errors() -> None:
    model, opt, batches, _ = _setup(random_cnn, "momentum")
    before = {(id(p), k): v.clone() for p, s in opt.state.items() for k, v in s.items()}
    transport_site_state(opt, model, [])
    assert all(torch.equal(before[id(p), k], v) for p, s in opt.state.items() for k, v in s.items())
    record = teleport(model, *batches[0], F.cross_entropy, group="auto", steps=2)
    adamax = torch.optim.Adamax(model.parameters())
    _step(model, adamax, batches[0], 0)
    with pytest.raises(UserError, match="no rule for Adamax"):
        transport_site_state(adamax, model, record.transforms)
    with pytest.raises(ValueError, match="one transform per site"):
        transport_site_state(opt, model, record.transforms[:1])
