"""The reference code's curvature ψ: against an autograd computation of its definition and against a
transcription of the reference code, its properties, as a teleport objective, and in a correlation study."""

from __future__ import annotations

import io
import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from float64_nets import inputs, mlp
from rich.console import Console
from torch import nn
from torch.func import jvp

from telebench.errors import UserError
from telebench.experiments.base import RunRequest
from telebench.experiments.correlation.experiment import EXPERIMENT as CORRELATION
from telebench.experiments.correlation.report import render_markdown, render_terminal
from telebench.experiments.correlation.schema import load_study
from telebench.experiments.runner import run_experiment
from telebench.results.schema import load_results
from telebench.symmetry import OBJECTIVES, SymmetryError, teleport
from telebench.symmetry.architecture import flat, parse, unflat
from telebench.symmetry.group_registry import get_group
from telebench.symmetry.objectives.curvature import curvature
from telebench.symmetry.objectives.curvature_reference import (
    CurvatureReference,
    curvature_reference,
    draw_directions,
)
from telebench.symmetry.problem import Problem

pytestmark = pytest.mark.usefixtures("one_thread")

SLOPE = 0.1
ROOT = Path(__file__).resolve().parents[1]


_mlp = partial(mlp, bias=False)  # the reference code's nets have no biases
_x = inputs


def _reference_ms(widths: list[int], i: int) -> list[torch.Tensor]:
    """correlation.py's draw `curve_idx = i`: torch.manual_seed(12345 * i), then torch.rand per hidden layer."""
    gen = torch.Generator().manual_seed(12345 * i)
    mats = [torch.rand(n, n, generator=gen) for n in widths]
    return [(m / torch.norm(m, p="fro")).double() for m in mats]


def _psi_by_autograd(model: nn.Sequential, x: torch.Tensor, mats: list[torch.Tensor]) -> float:
    """ψ from its definition, column convention: per pair, the curve t ↦ (σ⁻¹(exp(tM)σ(Ṽh̃))h̃⁺, U exp(−tM))
    differentiated by forward-mode autograd (exact matrix exponential, h̃ = [h; 1] with a bias), per-pair derivatives
    added into the weights' blocks, then Eq. (47) written out."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    d1 = [torch.zeros(lin.out_features, lin.in_features + (lin.bias is not None), dtype=torch.float64) for lin in linears]
    d2 = [torch.zeros_like(d) for d in d1]
    h = x.T
    for m, mat in enumerate(mats):
        v, b, u = linears[m].weight.detach(), linears[m].bias, linears[m + 1].weight.detach()
        vt = v if b is None else torch.cat([v, b.detach()[:, None]], 1)
        ht = h if b is None else torch.cat([h, torch.ones(1, h.shape[1], dtype=h.dtype)], 0)
        act = F.leaky_relu(vt @ ht, SLOPE)
        h_inv = torch.linalg.pinv(ht)

        def curve(t: torch.Tensor, act=act, h_inv=h_inv, mat=mat, u=u) -> torch.Tensor:
            g, g_inv = torch.linalg.matrix_exp(t * mat), torch.linalg.matrix_exp(-t * mat)
            return torch.cat([(F.leaky_relu(g @ act, 1 / SLOPE) @ h_inv).reshape(-1), (u @ g_inv).reshape(-1)])

        t0, one = torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)
        vel = jvp(curve, (t0,), (one,))[1]  # forward mode: one pass per derivative of the scalar t
        acc = jvp(lambda t: jvp(curve, (t,), (one,))[1], (t0,), (one,))[1]  # noqa: B023
        for d, g in ((d1, vel), (d2, acc)):
            d[m] += g[: vt.numel()].reshape(vt.shape)
            d[m + 1][:, : u.shape[1]] += g[vt.numel():].reshape(u.shape)
        h = act
    g1, g2 = torch.cat([d.reshape(-1) for d in d1]), torch.cat([d.reshape(-1) for d in d2])
    n1, n2 = g1.norm(), g2.norm()
    return float(torch.sqrt(n1**2 * n2**2 - torch.dot(g1, g2) ** 2) / n1**3)


def _psi_as_the_reference_code(weights: list[torch.Tensor], x: torch.Tensor, mats: list[torch.Tensor]) -> float:
    """curvature_utils.compute_gamma_12 and compute_curvature, transcribed (bias-free, features × batch)."""
    g1 = [torch.zeros_like(w) for w in weights]
    g2 = [torch.zeros_like(w) for w in weights]
    h = x.T
    for m, mat in enumerate(mats):
        u, v = weights[m + 1], weights[m]
        h_inv = torch.linalg.pinv(h)
        sigma_vx = F.leaky_relu(v @ h, SLOPE)
        sigma_1_vx = (v @ h).clone()
        sigma_1_vx[sigma_1_vx > 0], sigma_1_vx[sigma_1_vx < 0] = 1.0, 0.1
        g1[m + 1] += -u @ mat
        g1[m] += ((mat @ sigma_vx) / sigma_1_vx) @ h_inv
        g2[m + 1] += u @ mat @ mat
        g2[m] += ((mat @ mat @ sigma_vx) / sigma_1_vx) @ h_inv
        h = F.leaky_relu(v @ h, SLOPE)
    v1, v2 = torch.cat([g.flatten() for g in g1]), torch.cat([g.flatten() for g in g2])
    return float(torch.sqrt(v1.norm() ** 2 * v2.norm() ** 2 - torch.dot(v1, v2) ** 2) / v1.norm() ** 3)


@pytest.mark.parametrize("bias", [False, True])
def test_psi_matches_autograd_of_its_definition_draw_by_draw_and_chunk_by_chunk(bias):
    model, x = _mlp((7, 6, 5, 3), bias=bias), _x(60, 7)
    widths = [6, 5]
    expected = [_psi_by_autograd(model, x[20 * i: 20 * i + 20], _reference_ms(widths, i)) for i in range(3)]
    assert curvature_reference(model, x, n_draws=3, batch_size=20) == pytest.approx(sum(expected) / 3, rel=1e-9)
    # a fourth draw goes back to the first chunk; a remainder of rows is dropped
    fourth = _psi_by_autograd(model, x[:20], _reference_ms(widths, 3))
    got = curvature_reference(model, torch.cat([x, x[:7]]), n_draws=4, batch_size=20)
    assert got == pytest.approx((sum(expected) + fourth) / 4, rel=1e-9)


def test_psi_equals_the_reference_code_and_its_directions_are_the_reference_codes():
    model, x = _mlp((12, 8, 6, 4)), _x(30, 12)
    weights = [m.weight.detach() for m in model if isinstance(m, nn.Linear)]
    for i, mats in enumerate(draw_directions((8, 6), 3)):
        assert all(torch.equal(a.double(), b) for a, b in zip(mats, _reference_ms([8, 6], i), strict=True))
    expected = sum(_psi_as_the_reference_code(weights, x, _reference_ms([8, 6], i)) for i in range(3)) / 3
    assert curvature_reference(model, x, n_draws=3, batch_size=30) == pytest.approx(expected, rel=1e-9)
    # a batch smaller than batch_size is one batch; `seed` shifts the reference's seeds
    assert curvature_reference(model, x, n_draws=3, batch_size=200) == curvature_reference(model, x, n_draws=3, batch_size=30)
    assert curvature_reference(model, x, n_draws=3, seed=1) != curvature_reference(model, x, n_draws=3)


def test_psi_is_what_its_definition_says_it_is():
    model, x = _mlp((7, 6, 5, 3)), _x(20, 7)
    base = curvature_reference(model, x, n_draws=4)
    # LeakyReLU is positively homogeneous and there are no biases: the data's scale cancels in σ(Vh)h⁺
    assert curvature_reference(model, 3.7 * x, n_draws=4) == pytest.approx(base, rel=1e-9)
    # the batch enters through σ(Vh)h⁺ alone: reordering or repeating the samples changes nothing
    assert curvature_reference(model, x.flip(0), n_draws=4) == pytest.approx(base, rel=1e-9)
    assert curvature_reference(model, torch.cat([x, x]), n_draws=4, batch_size=40) == pytest.approx(base, rel=1e-9)
    # ... but it is data-dependent, and it is not telebench's gl-data orbit curvature
    assert curvature_reference(model, _x(20, 7, seed=5), n_draws=4) != pytest.approx(base, rel=1e-3)
    assert curvature(model, x, group="gl-data", n_draws=4) > 2 * base
    # seeded, without side effects on the model or on torch's global generator
    state = torch.random.get_rng_state()
    assert curvature_reference(model, x, n_draws=4) == base
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU])
def test_activations_without_the_definition_are_refused_naming_the_layer(act):
    with pytest.raises(SymmetryError, match=r"model\[1\].*reference code's curvature ψ"):
        curvature_reference(_mlp((5, 4, 3), act=act), _x(8, 5))


def test_as_a_teleport_objective_its_gradient_is_right_and_a_teleport_raises_it():
    assert "curvature_reference" in OBJECTIVES
    model, x = _mlp((7, 6, 5, 3), bias=True), _x(40, 7)
    y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(2))
    arch = parse(model)
    problem = Problem(arch, x, y, F.cross_entropy)
    obj = CurvatureReference(n_draws=2, batch_size=20)
    obj.setup(problem, get_group("rescale"), None)
    params = arch.params()
    ev, grads = obj.value_and_gradient(problem, params)
    assert ev is not None and float(ev.value) == pytest.approx(curvature_reference(model, x, n_draws=2, batch_size=20))
    direction = [torch.randn(t.shape, generator=torch.Generator().manual_seed(3), dtype=t.dtype) for t in flat(params)]
    eps = 1e-6

    def at(sign: float) -> float:
        moved = unflat([t + sign * eps * d for t, d in zip(flat(params), direction, strict=True)], params)
        return float(obj.evaluate(problem, moved, create_graph=False).value)

    numeric = (at(1.0) - at(-1.0)) / (2 * eps)
    analytic = sum(float((g * d).sum()) for g, d in zip(flat(grads), direction, strict=True))
    assert analytic == pytest.approx(numeric, rel=1e-5)
    record = teleport(model, x, y, F.cross_entropy, group="rescale", objective="curvature_reference", steps=3, lr=0.05,
                      normalize_step=True, objective_kwargs={"n_draws": 2, "batch_size": 20})
    assert record.accepted and record.objective_after > record.objective_before


# ---- in the correlation study ------------------------------------------------------------------------

STUDY = {
    "kind": "correlation",
    "name": "tiny-psi",
    "defaults": {
        "model": {"widths": [64, 8, 10], "activation": "leaky_relu", "bias": False},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "batch_size": 16,
        "measure_batch": 50,
        "metrics": {
            "curv": {"metric": "curvature", "group": "gl-data", "n_draws": 2},
            "psi": {"metric": "curvature_reference", "n_draws": 4, "batch_size": 25},
        },
    },
    "cases": [{"name": "digits", "dataset": {"name": "digits"}, "networks": 3, "budget": {"steps": 20}}],
}


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_a_study_reports_the_reference_psi_beside_our_curvature(tmp_path):
    study = load_study(_write(tmp_path, STUDY))
    assert [(m.label, m.kind) for m in study.cases[0].metrics] == [("curv", "curvature"), ("psi", "curvature_reference")]
    out = tmp_path / "out"
    outcome = run_experiment(CORRELATION, study, RunRequest(out_dir=out, executor="local"), Console(file=io.StringIO()))
    (case,) = outcome.results["cases"]
    assert all(n["status"] == "ok" and set(n["metrics"]) == {"curv", "psi"} for n in case["networks"])
    for n in case["networks"]:
        assert n["metrics"]["curv"] > 2 * n["metrics"]["psi"] > 0  # two quantities, neither standing for the other
    rows = {(c["metric"], c["target"], c["method"]) for c in case["correlations"]}
    assert {("curv", "val_loss", "spearman"), ("psi", "val_loss", "spearman"), ("psi", "val_loss", "pearson")} <= rows
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| psi | curvature (reference code's ψ) | validation loss |" in report
    assert "| curv | curvature (ours: telebench's gl-data orbit curvature) | validation loss |" in report
    assert "`curv` / `psi` = " in report
    terminal = io.StringIO()
    render_terminal(load_results(out / "results.json"), Console(file=terminal, width=250))
    assert "curvature (reference code's ψ)" in terminal.getvalue() and "curvature (ours" in terminal.getvalue()


def test_a_study_refuses_psi_on_an_activation_it_is_not_defined_for(tmp_path):
    doc = json.loads(json.dumps(STUDY))
    doc["defaults"]["model"]["activation"] = "tanh"
    del doc["defaults"]["metrics"]["curv"]
    with pytest.raises(UserError, match=r"defaults\.metrics\.psi\.metric: curvature_reference needs an invertible"):
        load_study(_write(tmp_path, doc))


def test_results_written_before_psi_existed_still_render():
    results = load_results(ROOT / "reports" / "paper-correlation" / "results.json")  # telebench.correlation/1
    markdown = render_markdown(results, {})
    assert "| curvature-gl-data | curvature (ours: telebench's gl-data orbit curvature) | validation loss |" in markdown
    assert "(reference code's ψ) | validation loss" not in markdown
    terminal = io.StringIO()
    render_terminal(results, Console(file=terminal, width=250))
    assert "curvature (ours: telebench's rescale orbit curvature)" in terminal.getvalue()
