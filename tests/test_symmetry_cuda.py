"""telebench.symmetry on CUDA: same maths, and no host synchronisation inside the search."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from telebench.symmetry import check_model, get_group, get_objective, teleport
from telebench.symmetry.problem import Problem
from telebench.symmetry.search import SearchOptions, search

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ACT = {"rescale": nn.ReLU, "linear": nn.Identity, "gl-data": lambda: nn.LeakyReLU(0.1)}


def mlp(make, dtype=torch.float32) -> nn.Sequential:
    return nn.Sequential(nn.Linear(784, 16), make(), nn.Linear(16, 10), make(), nn.Linear(10, 10)).to("cuda", dtype)


@pytest.mark.parametrize("group", ["rescale", "linear", "gl-data"])
@pytest.mark.parametrize("dtype,bound", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_teleport_on_cuda_raises_the_gradient_norm_and_keeps_the_function(group, dtype, bound):
    torch.manual_seed(0)
    model = mlp(ACT[group], dtype)
    original = copy.deepcopy(model)
    x = torch.randn(200, 784, device="cuda", dtype=dtype)
    y = torch.randint(0, 10, (200,), device="cuda")
    rec = teleport(model, x, y, F.cross_entropy, group=group, lr=0.05)
    assert rec.accepted and rec.objective_after > rec.objective_before
    assert all(p.device.type == "cuda" for p in model.parameters())
    if group != "gl-data":
        fresh = torch.randn(64, 784, device="cuda", dtype=dtype)
        with torch.no_grad():
            before, after = original(fresh), model(fresh)
        assert float((after - before).norm() / before.norm()) < bound


@pytest.mark.parametrize("group", ["rescale", "linear", "gl-data"])
def test_search_does_not_synchronise_with_the_host(group):
    torch.manual_seed(1)
    grp, obj = get_group(group), get_objective("grad_norm")
    arch = check_model(mlp(ACT[group]), grp)
    x = torch.randn(200, 784, device="cuda")
    problem = Problem(arch, x, torch.randint(0, 10, (200,), device="cuda"), F.cross_entropy)
    settings = SearchOptions(steps=10, lr=0.05)
    search(problem, grp, obj, settings)  # warm-up: library handles, cached constants
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        search(problem, grp, obj, settings)
    finally:
        torch.cuda.set_sync_debug_mode("default")
