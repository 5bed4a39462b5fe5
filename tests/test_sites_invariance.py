"""Every site group leaves the function unchanged for every input: ≥ 20 seeded random models per family
(CNN, ResNet with BatchNorm in train and in eval mode, transformer with hand-written attention and with
nn.MultiheadAttention), a random group element applied, outputs compared on fresh inputs (not the
inputs discovery saw). Relative change ≤ 1e-10 in float64 and ≤ 1e-5 in float32."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from test_sites_families import Case, random_cnn, random_resnet, random_transformer, warm_up
from torch import Tensor, nn

from telebench.symmetry import find_symmetries
from telebench.symmetry.sites import actions
from telebench.symmetry.sites.discovery import discover
from telebench.symmetry.sites.graph import read_graph
from telebench.symmetry.sites.site import SiteSet

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = 20
GROUPS = ("channel-rescale", "norm-scale", "attention", "auto")
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
EXPECTED: dict[str, set[str]] = {  # the groups every model of the family must have sites for
    "cnn": {"channel-rescale", "auto"},
    "resnet": {"channel-rescale", "norm-scale", "auto"},
    "transformer": {"channel-rescale", "attention", "auto"},
}
FAMILIES: dict[str, Callable[[int], Case]] = {"cnn": random_cnn, "resnet": random_resnet, "transformer": random_transformer}


def _outputs(model: nn.Module, x: Tensor, seed: int) -> Tensor:
    torch.manual_seed(seed)  # the same Dropout masks on both sides
    with torch.no_grad():
        return model(x)


def _check(model: nn.Module, found: SiteSet, x: Tensor, dtype: torch.dtype, seed: int) -> float:
    model = copy.deepcopy(model).to(dtype)
    x = x.to(dtype) if x.is_floating_point() else x
    g = torch.Generator().manual_seed(seed)
    like = next(model.parameters())
    elements = [actions.element(s, 0.4 * actions.sample(s, like, g)) for s in found.sites]
    before = _outputs(model, x, seed)
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    actions.write(model, list(found.sites), elements)
    after = _outputs(model, x, seed)
    moved = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert not torch.equal(moved, weights), "the move must change the weights"
    return float((after - before).norm() / before.norm())


def _run_family(family: str, mode: str) -> dict[str, int]:
    counts = dict.fromkeys(GROUPS, 0)
    for seed in range(MODELS):
        model, inputs, _ = FAMILIES[family](seed)
        model = model.double()
        def batch(n: int, inputs: Callable[[int], Tensor] = inputs) -> Tensor:
            x = inputs(n)
            return x.double() if x.is_floating_point() else x

        warm_up(model, batch)
        model.train(mode == "train")
        seen = batch(2)
        fresh = inputs(5)
        graph = read_graph(model, seen)  # find_symmetries, traced once for the four groups
        for group in GROUPS:
            found = discover(graph, group)
            if not found.sites:
                assert group not in EXPECTED[family], f"{family} seed {seed}: no {group} site\n{found.describe()}"
                continue
            counts[group] += 1
            for dtype, tol in TOLERANCE.items():
                change = _check(model, found, fresh, dtype, seed)
                assert change <= tol, f"{family} seed {seed} {group} {dtype}: relative change {change:.3g}"
    return counts


@pytest.mark.parametrize("family, mode", [("cnn", "train"), ("cnn", "eval"), ("resnet", "train"),
                                          ("resnet", "eval"), ("transformer", "train")])
def test_every_group_is_exact_on_random_models(family: str, mode: str) -> None:
    counts = _run_family(family, mode)
    for group in EXPECTED[family]:
        assert counts[group] == MODELS
    if family == "cnn":
        assert counts["norm-scale"] > 0  # the CNNs with batch_norm=True


def test_hand_written_and_packed_attention_are_both_covered() -> None:
    kinds = set()
    for seed in range(MODELS):
        for attention in ("manual", "mha"):
            model, inputs, _ = random_transformer(seed, attention)
            found = find_symmetries(model.double(), inputs(2), "attention")
            assert len(found.of_kind("attention-qk")) == len(found.of_kind("attention-vo")) >= 1
            kinds.add(attention)
            change = _check(model, found, inputs(4), torch.float64, seed)
            assert change <= 1e-10
    assert kinds == {"manual", "mha"}
