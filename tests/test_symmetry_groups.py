"""Group actions, their derivatives and the numerical kernels behind them (telebench.symmetry)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from telebench.symmetry import GROUPS, Group, SymmetryError, check_model, get_group
from telebench.symmetry.architecture import flat, parse, unflat
from telebench.symmetry.linalg import LeastSquares, expm, expm_on_device
from telebench.symmetry.problem import Problem

ACTIVATIONS = {
    "rescale": [lambda: nn.ReLU(), lambda: nn.LeakyReLU(random.uniform(0.01, 0.5)), lambda: nn.Identity(), None],
    "linear": [lambda: nn.Identity(), None],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def random_mlp(rng: random.Random, group: str, dtype: torch.dtype) -> nn.Sequential:
    """Depth 2-5 Linear layers, widths 1-64, bias or not per layer, an allowed activation (or none)."""
    widths = [rng.randint(1, 64) for _ in range(rng.randint(3, 6))]
    make = rng.choice(ACTIVATIONS[group])
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=rng.random() < 0.6))
        if i < len(widths) - 2 and make is not None:
            layers.append(make())
    return nn.Sequential(*layers).to(dtype)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("dtype,bound", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("group", ["rescale", "linear"])
@pytest.mark.parametrize("parametrization", ["exp", "linear"])
def test_exact_groups_preserve_outputs_on_fresh_inputs(group, parametrization, dtype, bound):
    rng = random.Random(f"{group}-{parametrization}-{dtype}")
    torch.manual_seed(rng.randint(0, 2**31))
    grp = get_group(group)
    for _ in range(24):
        model = random_mlp(rng, group, dtype)
        arch = check_model(model, grp)
        params = arch.params()
        width_scale = [n**-0.5 if group == "linear" else 1.0 for n in arch.widths]
        algebra = [0.4 * s * t for s, t in zip(width_scale, grp.sample(arch, params[0][0]), strict=True)]
        if group == "rescale" and parametrization == "linear":  # s = 1 + θ is a group element only while > 0
            algebra = [t.clamp(min=-0.8) for t in algebra]
        g, g_inv = grp.element(algebra, parametrization)
        moved, _ = grp.act(arch, params, g, g_inv, None)
        x = torch.randn(32, arch.linears[0].in_features, dtype=dtype)
        before, after = arch.forward(params, x), arch.forward(moved, x)
        assert relative(after, before) < bound, (group, [lin.out_features for lin in arch.linears])
        assert relative(flat(moved)[0], flat(params)[0]) > 1e-3  # the weights did move


def test_rescale_element_is_positive_diagonal_and_inverse_is_exact():
    grp = get_group("rescale")
    theta = [torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)]
    (s,), (s_inv,) = grp.element(theta, "exp")
    assert torch.allclose(s, theta[0].exp()) and torch.allclose(s * s_inv, torch.ones(3, dtype=torch.float64))
    (s,), (s_inv,) = grp.element([torch.tensor([0.5, -0.25], dtype=torch.float64)], "linear")
    assert torch.equal(s, torch.tensor([1.5, 0.75], dtype=torch.float64)) and torch.allclose(s * s_inv, torch.ones(2, dtype=torch.float64))


def test_linear_parametrization_uses_an_exact_inverse_not_first_order():
    grp = get_group("linear")
    t = [torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.3]
    (g,), (g_inv,) = grp.element(t, "linear")
    assert torch.allclose(g, torch.eye(5, dtype=torch.float64) + t[0])
    assert torch.allclose(g @ g_inv, torch.eye(5, dtype=torch.float64), atol=1e-12)
    assert not torch.allclose(g_inv, torch.eye(5, dtype=torch.float64) - t[0], atol=1e-3)


def gl_net(widths=(6, 9, 7, 3), act=nn.LeakyReLU(0.1), bias=True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i < len(widths) - 2:
            layers.append(act)
    return nn.Sequential(*layers).double()


@pytest.mark.parametrize("act", [nn.LeakyReLU(0.1), nn.Tanh(), nn.Sigmoid(), nn.Identity()])
def test_gl_data_is_exact_on_the_batch_when_batch_at_most_width(act):
    torch.manual_seed(1)
    grp = get_group("gl-data")
    model = gl_net(act=act)
    arch = check_model(model, grp)
    x = torch.randn(6, 6, dtype=torch.float64)  # batch 6 ≤ hidden widths 9 and 7
    params = arch.params()
    algebra = [0.3 * t for t in grp.sample(arch, params[0][0])]
    g, _ = grp.element(algebra)
    moved, _ = grp.act(arch, params, g, None, grp.prepare(arch, params, x))
    assert relative(arch.forward(moved, x), arch.forward(params, x)) < 1e-10
    fresh = torch.randn(50, 6, dtype=torch.float64)
    assert relative(arch.forward(moved, fresh), arch.forward(params, fresh)) > 1e-6  # data-dependent


def test_gl_data_identity_element_leaves_weights_unchanged_even_when_batch_below_width():
    grp = get_group("gl-data")
    model = gl_net()
    arch = check_model(model, grp)
    params = arch.params()
    for batch in (4, 40):
        x = torch.randn(batch, 6, dtype=torch.float64)
        g, _ = grp.element(grp.zeros(arch, params[0][0]))
        moved, _ = grp.act(arch, params, g, None, grp.prepare(arch, params, x))
        for new, old in zip(flat(moved), flat(params), strict=True):
            assert torch.allclose(new, old, atol=1e-12)


@pytest.mark.parametrize("group,act", [("rescale", nn.LeakyReLU(0.2)), ("linear", nn.Identity()),
                                       ("gl-data", nn.LeakyReLU(0.1)), ("gl-data", nn.Tanh())])
@pytest.mark.parametrize("batch", [4, 40])
def test_closed_form_pullbacks_match_autograd(group, act, batch):
    torch.manual_seed(2)
    grp = get_group(group)
    model = gl_net(act=act, bias=batch == 40)
    arch = check_model(model, grp)
    params = arch.params()
    state = grp.prepare(arch, params, torch.randn(batch, 6, dtype=torch.float64))
    dparams = [(torch.randn_like(w), None if b is None else torch.randn_like(b)) for w, b in params]
    closed = grp.pullback(arch, params, state, dparams)
    reference = Group.pullback(grp, arch, params, state, dparams)
    for c, r in zip(closed, reference, strict=True):
        assert torch.allclose(c, r, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("group,act", [("rescale", nn.ReLU()), ("linear", nn.Identity()), ("gl-data", nn.Tanh())])
def test_near_identity_action_is_the_first_order_of_the_true_action(group, act):
    """d/dε act(exp(εD)) at 0, by central differences, equals the tangent of act_near_identity."""
    torch.manual_seed(3)
    grp = get_group(group)
    model = gl_net(act=act)
    arch = check_model(model, grp)
    params = arch.params()
    state = grp.prepare(arch, params, torch.randn(30, 6, dtype=torch.float64))
    direction = grp.sample(arch, params[0][0])
    eps = 1e-6

    def moved(scale: float) -> list[torch.Tensor]:
        g, g_inv = grp.element([scale * d for d in direction])
        return flat(grp.act(arch, params, g, g_inv, state)[0])

    numeric = [(p - m) / (2 * eps) for p, m in zip(moved(eps), moved(-eps), strict=True)]
    _, tangent = torch.func.jvp(lambda *t: tuple(flat(grp.act_near_identity(arch, params, list(t), state))),
                                tuple(torch.zeros_like(d) for d in direction), tuple(direction))
    for n, t in zip(numeric, tangent, strict=True):
        assert torch.allclose(n, t, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("group", ["rescale", "linear"])
def test_gradients_transform_covariantly_under_exact_groups(group):
    torch.manual_seed(4)
    grp = get_group(group)
    model = gl_net(act=nn.ReLU() if group == "rescale" else nn.Identity())
    arch = check_model(model, grp)
    problem = Problem(arch, torch.randn(25, 6, dtype=torch.float64), torch.randint(0, 3, (25,)), F.cross_entropy)
    params = arch.params()
    g, g_inv = grp.element([0.5 * t for t in grp.sample(arch, params[0][0])])
    moved, _ = grp.act(arch, params, g, g_inv, None)
    predicted = grp.transform_gradients(problem.gradients(params)[1], g, g_inv)
    for p, a in zip(flat(predicted), flat(problem.gradients(moved)[1]), strict=True):
        assert torch.allclose(p, a, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("acts", [[nn.LeakyReLU(0.1)], [nn.Tanh()], [nn.ELU(0.7), nn.Sigmoid()], [nn.GELU()],
                                  [nn.Softplus(2.0, 1.0)], [nn.Softsign()], [nn.Identity()]])
def test_hand_written_gradient_and_hvp_match_autograd(acts):
    torch.manual_seed(5)
    layers = [nn.Linear(6, 8), *acts, nn.Linear(8, 7, bias=False), *acts, nn.Linear(7, 3), nn.LogSoftmax(-1)]
    arch = parse(nn.Sequential(*layers).double())
    problem = Problem(arch, torch.randn(20, 6, dtype=torch.float64), torch.randint(0, 3, (20,)), F.nll_loss)
    params = arch.params()
    loss, grads, hvp = problem.gradient_and_hvp(params)
    leaves = [t.clone().requires_grad_() for t in flat(params)]
    ref_loss = problem.loss(unflat(leaves, params))
    ref_grads = torch.autograd.grad(ref_loss, leaves, create_graph=True)
    ref_hvp = torch.autograd.grad(ref_grads, leaves, [g.detach() for g in ref_grads])
    assert torch.allclose(loss, ref_loss.detach())
    for a, b in zip(flat(grads), ref_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(flat(hvp), ref_hvp, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 3e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize("scale", [0.0, 1e-4, 0.1, 1.0, 8.0])
def test_expm_matches_scipy_grade_reference(dtype, tol, scale):
    a = torch.randn(3, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * scale / 10**0.5
    reference = torch.linalg.matrix_exp(a)
    for fn in (expm, expm_on_device):
        result = fn(a.to(dtype)).double()
        assert relative(result, reference) < tol
    assert relative(expm(a[0].to(dtype)).double(), reference[0]) < tol


@pytest.mark.parametrize("shape", [(40, 6), (4, 6)])
def test_least_squares_is_the_minimum_norm_solution(shape):
    gen = torch.Generator().manual_seed(7)
    p = torch.randn(*shape, dtype=torch.float64, generator=gen)
    e = torch.randn(shape[0], 3, dtype=torch.float64, generator=gen)
    solver = LeastSquares(p)
    pinv = torch.linalg.pinv(p)
    assert torch.allclose(solver.solve(e), pinv @ e, atol=1e-12)
    f = torch.randn(shape[1], 3, dtype=torch.float64, generator=gen)
    assert torch.allclose(solver.solve_adjoint(f), pinv.mT @ f, atol=1e-12)
    assert torch.allclose(solver.residual(e), e - p @ pinv @ e, atol=1e-12)


def test_registry_lists_the_three_groups_with_dtype_aware_tolerances():
    assert set(GROUPS) == {"rescale", "linear", "gl-data"}
    for name in ("rescale", "linear"):
        grp = get_group(name)
        assert grp.exact and grp.default_tolerance(torch.float64) < grp.default_tolerance(torch.float32)
    assert not get_group("gl-data").exact
    with pytest.raises(ValueError, match="unknown symmetry group 'rotate'.*gl-data"):
        get_group("rotate")


@pytest.mark.parametrize(
    "model,group,pattern",
    [
        (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Linear(4, 2)), "rescale", r"model\[0\] \(Conv2d\): convolutions"),
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(6, 2)), "rescale",
         r"model\[2\] \(Linear\): in_features=6 does not match out_features=8"),
        (nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), "rescale",
         r"model\[1\] \(Tanh\): group 'rescale' needs a positively homogeneous activation"),
        (nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2)), "rescale", r"model\[1\] \(GELU\)"),
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), "linear",
         r"model\[1\] \(ReLU\): group 'linear' needs identity activations"),
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), "gl-data",
         r"model\[1\] \(ReLU\): group 'gl-data' needs an invertible activation"),
        (nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.0), nn.Linear(8, 2)), "gl-data", r"model\[1\] \(LeakyReLU\)"),
        (nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2)), "rescale",
         r"model\[1\] \(Dropout\): not a layer"),
        (nn.Sequential(nn.Linear(4, 8), nn.Softmax(-1), nn.Linear(8, 2)), "rescale",
         r"model\[1\] \(Softmax\): Softmax mixes units"),
        (nn.Sequential(nn.Linear(4, 2)), "rescale", r"1 nn.Linear layer\(s\)"),
        (nn.Linear(4, 2), "rescale", r"model is a Linear, but .* nn.Sequential"),
    ],
)
def test_unsupported_models_get_errors_naming_the_layer_and_reason(model, group, pattern):
    with pytest.raises(SymmetryError, match=pattern):
        check_model(model, group)
    assert issubclass(SymmetryError, ValueError)


def test_supported_extras_flatten_prefix_and_output_log_softmax():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.ReLU(), nn.Linear(5, 3), nn.LogSoftmax(-1))
    arch = check_model(model, "rescale")
    x = torch.randn(4, 2, 3)
    assert torch.allclose(arch.forward(arch.params(), arch.prepare_inputs(x)), model(x))


@pytest.mark.parametrize("group,act", [("rescale", nn.ReLU()), ("linear", nn.Identity()), ("gl-data", nn.Tanh())])
def test_the_true_action_is_differentiable_along_a_curve(group, act):
    """Objectives such as the curvature of exp(tM)·w differentiate the action itself, away from g = I."""
    torch.manual_seed(8)
    grp = get_group(group)
    arch = check_model(gl_net(act=act), grp)
    params = arch.params()
    problem = Problem(arch, torch.randn(30, 6, dtype=torch.float64), torch.randint(0, 3, (30,)), F.cross_entropy)
    state = grp.prepare(arch, params, problem.inputs)
    direction = grp.sample(arch, params[0][0])

    def loss_at(t: torch.Tensor) -> torch.Tensor:
        g, g_inv = grp.element([t * d for d in direction])
        return problem.loss(grp.act(arch, params, g, g_inv, state)[0])

    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(loss_at(t), t)
    with torch.no_grad():
        step = torch.tensor(1e-6, dtype=torch.float64)
        numeric = (loss_at(t.detach() + step) - loss_at(t.detach() - step)) / (2 * step)
    assert float(slope) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9)
