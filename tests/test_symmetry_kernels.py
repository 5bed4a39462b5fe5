"""The kernels behind the fast searches: φ and the joint exponential, the factor shapes, the
least-squares solvers and the fused gl-data step, each against its plain definition."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import telebench.symmetry.gl_kernel as gl_kernel
from telebench.symmetry import check_model, get_group, get_objective, teleport
from telebench.symmetry.factors import IdentityPlus, LowRank, compose_left, compose_right, lmul, rmul, rmul_t
from telebench.symmetry.gl_kernel import GradNormKernel, TallSolver, WideSolver, initial_state
from telebench.symmetry.linalg import LeastSquares, addmm, column_major, expm_all, linear, mm, phi
from telebench.symmetry.problem import Problem

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("scale", [0.0, 1e-3, 0.3, 3.0, 40.0])
def test_phi_gives_the_exponential_of_a_low_rank_element(scale, adaptive):
    gen = torch.Generator().manual_seed(0)
    u, v = torch.randn(5, 30, dtype=F64, generator=gen), torch.randn(5, 30, dtype=F64, generator=gen) * scale / 30
    exact = torch.linalg.matrix_exp(u.mT @ v)
    assert relative(torch.eye(30, dtype=F64) + u.mT @ phi(v @ u.mT, adaptive=adaptive) @ v, exact) < 1e-12
    got32 = torch.eye(30) + u.float().mT @ phi((v @ u.mT).float(), adaptive=adaptive) @ v.float()
    assert relative(got32.double(), exact) < 1e-5


def test_phi_and_expm_turn_an_absurd_norm_into_nan_not_an_error():
    huge = torch.full((4, 4), 1e300, dtype=F64)
    assert torch.isnan(phi(huge)).all()
    assert not torch.isfinite(expm_all([huge, torch.zeros(3, 3, dtype=F64)])[0]).any()


def test_expm_all_matches_matrix_exp_for_matrices_of_different_sizes():
    gen = torch.Generator().manual_seed(1)
    mats = [torch.randn(n, n, dtype=F64, generator=gen) * s for n, s in ((7, 0.01), (12, 0.8), (3, 2.5))]
    for got, m in zip(expm_all(mats), mats, strict=True):
        assert relative(got, torch.linalg.matrix_exp(m)) < 1e-13


def test_every_factor_shape_multiplies_like_its_dense_matrix():
    gen = torch.Generator().manual_seed(2)
    n = 9
    w, z, b = (torch.randn(n, 5, dtype=F64, generator=gen), torch.randn(4, n, dtype=F64, generator=gen),
               torch.randn(n, dtype=F64, generator=gen))
    factors = [
        torch.rand(n, dtype=F64, generator=gen) + 0.5,  # diagonal, as a vector
        torch.randn(n, n, dtype=F64, generator=gen),
        IdentityPlus(torch.randn(n, n, dtype=F64, generator=gen)),
        LowRank(torch.randn(3, n, dtype=F64, generator=gen), torch.randn(3, n, dtype=F64, generator=gen)),
        LowRank(torch.randn(3, n, dtype=F64, generator=gen), torch.randn(3, n, dtype=F64, generator=gen),
                torch.randn(3, 3, dtype=F64, generator=gen)),
    ]
    for f in factors:
        m = f.dense() if isinstance(f, IdentityPlus | LowRank) else (torch.diag(f) if f.dim() == 1 else f)
        assert torch.allclose(lmul(f, w), m @ w) and torch.allclose(lmul(f, b), m @ b)
        assert torch.allclose(rmul(w.mT, f), w.mT @ m) and torch.allclose(rmul_t(z, f), z @ m.mT)
    dense = [f for f in factors[1:]]
    as_matrices = [f.dense() if isinstance(f, IdentityPlus | LowRank) else f for f in dense]
    left = compose_left(dense, w, n, diagonal=False)
    right = compose_right(dense, w, n, diagonal=False)
    assert torch.allclose(left, as_matrices[3] @ as_matrices[2] @ as_matrices[1] @ as_matrices[0])
    assert torch.allclose(right, as_matrices[0] @ as_matrices[1] @ as_matrices[2] @ as_matrices[3])


@pytest.mark.parametrize("shape,dtype", [((200, 10), torch.float32), ((200, 64), torch.float32),
                                         ((2000, 16), torch.float32), ((40, 6), F64)])
def test_the_tall_solver_is_the_least_squares_solver(shape, dtype):
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(*shape, dtype=F64, generator=gen)
    e, f = torch.randn(shape[0], 4, dtype=F64, generator=gen), torch.randn(shape[1], 4, dtype=F64, generator=gen)
    x = torch.randn(shape[0], 4, dtype=F64, generator=gen)
    ref, got = LeastSquares(p), TallSolver(p.to(dtype))
    tol = 1e-12 if dtype == F64 else 1e-5
    assert relative(got.solve(e.to(dtype)).double(), ref.solve(e)) < tol
    assert relative(got.adjoint(f.to(dtype)).double(), ref.solve_adjoint(f)) < tol
    both = got.adjoint(f.to(dtype), x.to(dtype, copy=True)).double()  # adjoint writes into its x
    assert relative(both, ref.solve_adjoint(f) + ref.residual(x)) < tol


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_the_wide_solver_is_the_minimum_norm_solver(dtype):
    gen = torch.Generator().manual_seed(4)
    p = torch.randn(30, 80, dtype=F64, generator=gen)
    e = torch.randn(30, 80, dtype=F64, generator=gen)
    solver = WideSolver(p.to(dtype))
    got = p.mT.to(dtype) @ solver.kinv(e.to(dtype))  # P⁺E = Pᵀ K⁻¹ E
    assert relative(got.double(), LeastSquares(p).solve(e)) < (1e-12 if dtype == F64 else 1e-5)
    assert relative(solver.gram.double(), p @ p.mT) < 1e-6


@pytest.mark.parametrize("batch,act", [(40, nn.Tanh()), (40, nn.LeakyReLU(0.1)), (6, nn.LeakyReLU(0.1)),
                                       (6, nn.ELU(0.7))])
def test_the_fused_step_is_the_pullback_of_twice_the_hessian_vector_product(batch, act):
    """GradNormKernel.algebra_gradient against GLDataGroup.pullback(2 H ∇L) on the same point,
    for tall, wide (kernel and low-rank) layers and a curved activation."""
    torch.manual_seed(5)
    widths = (10, 24, 20, 3) if batch == 6 else (6, 9, 7, 3)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(act)
    grp = get_group("gl-data")
    arch = check_model(nn.Sequential(*layers).double(), grp)
    problem = Problem(arch, torch.randn(batch, widths[0], dtype=F64), torch.randint(0, 3, (batch,)), F.cross_entropy)
    params = arch.params()
    state = grp.prepare(arch, params, problem.inputs)
    ev, dparams = get_objective("grad_norm").value_and_gradient(problem, params, state)
    expected = grp.pullback(arch, params, state, dparams)
    kernel = GradNormKernel(problem, steps=10)
    if batch == 6:
        assert kernel.input_kernel is not None and kernel.lowrank[0]
    live = [[w, b] for w, b in params]
    fused = initial_state(arch, live, problem.inputs, kernel.acts, kernel.colmajor)  # the search's layouts
    bw = kernel.backward(live, fused, second=True, value=True, loss=True)
    assert ev is not None and float(bw.value) == pytest.approx(float(ev.value), rel=1e-12)
    for step, ref in zip(kernel.algebra_gradient(live, fused, bw), expected, strict=True):
        got = step.dense if step.dense is not None else step.a.mT @ step.b
        assert relative(got, ref) < 1e-10


def test_transforms_of_a_wide_gl_data_teleport_reproduce_the_move():
    """Low-rank elements and right factors (layers wider than the batch), composed only when read."""
    import math

    from telebench.symmetry import teleport

    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(10, 48), nn.Tanh(), nn.Linear(48, 40), nn.Tanh(), nn.Linear(40, 3)).double()
    x, y = torch.randn(8, 10, dtype=F64), torch.randint(0, 3, (8,))
    old = [(lin.weight.detach().clone(), lin.bias.detach().clone()) for lin in model if isinstance(lin, nn.Linear)]
    twin = copy.deepcopy(model)
    kernel = GradNormKernel(Problem(check_model(model, "gl-data"), x, y, F.cross_entropy), steps=4)
    assert kernel.lowrank == [True, True]
    rec = teleport(model, x, y, F.cross_entropy, group="gl-data", steps=4, lr=0.05, normalize_step=True,
                   max_weight_change=math.inf)
    assert rec.accepted and rec.relative_weight_change > 1e-3
    new = [(lin.weight.detach(), lin.bias.detach()) for lin in model if isinstance(lin, nn.Linear)]
    for m, (w, b) in enumerate(old):
        left = rec.transforms[m].left if m < 2 else torch.eye(w.shape[0], dtype=F64)
        right = rec.transforms[m - 1].right if m > 0 else torch.eye(w.shape[1], dtype=F64)
        assert torch.allclose(new[m][0], left @ w @ right, atol=1e-10)
        assert torch.allclose(new[m][1], left @ b, atol=1e-10)
    # Σ_k T_k, summed from the kept factors when read, is the generic search's
    from telebench.symmetry.search import SearchOptions, _generic, norm

    generic = _generic(Problem(check_model(twin, "gl-data"), x, y, F.cross_entropy), get_group("gl-data"),
                       get_objective("grad_norm"), SearchOptions(steps=4, lr=0.05, normalize_step=True))
    assert rec.algebra_norm == pytest.approx(float(norm(generic.algebra)), rel=1e-8)


@pytest.mark.parametrize("scale", [0.5, -3.0, torch.tensor(0.02, dtype=F64)])
def test_the_step_size_folded_into_the_series_is_the_exponential_of_the_scaled_matrix(scale):
    gen = torch.Generator().manual_seed(7)
    mats = [torch.randn(n, n, dtype=F64, generator=gen) * 0.3 for n in (6, 9)]

    def taylor(a: torch.Tensor) -> torch.Tensor:  # the series to 40 terms (matrix_exp is only good to ~1e-12 here)
        term = total = torch.eye(a.shape[0], dtype=F64)
        for k in range(1, 40):
            term = term @ a / k
            total = total + term
        return total

    for got, m in zip(expm_all(mats, scale=scale), mats, strict=True):
        assert relative(got, taylor(float(scale) * m)) < 1e-14
    u, v = torch.randn(4, 20, dtype=F64, generator=gen), torch.randn(4, 20, dtype=F64, generator=gen) / 20
    for adaptive in (True, False):
        assert relative(phi(v @ u.mT, adaptive=adaptive, scale=scale), phi(float(scale) * (v @ u.mT), adaptive=adaptive)) < 1e-12


def test_a_low_rank_factor_may_form_its_second_factor_on_first_use():
    gen = torch.Generator().manual_seed(8)
    u, v, w = (torch.randn(3, 7, dtype=F64, generator=gen), torch.randn(3, 7, dtype=F64, generator=gen),
               torch.randn(7, 5, dtype=F64, generator=gen))
    calls = []
    lazy = LowRank(u, lambda: calls.append(1) or v)
    assert not calls
    assert torch.allclose(lmul(lazy, w), LowRank(u, v).dense() @ w) and torch.allclose(lazy.dense(), LowRank(u, v).dense())
    assert calls == [1]  # formed once


@pytest.mark.parametrize("bias", [True, False])
def test_the_input_kernel_carries_the_input_bias_gradient(bias):
    """K̃ = [X 1][X 1]ᵀ when the input layer has a bias: the fused value and step match the generic ones."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(30, 8, bias=bias), nn.Tanh(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    grp = get_group("gl-data")
    arch = check_model(model, grp)
    problem = Problem(arch, torch.randn(12, 30, dtype=F64), torch.randint(0, 3, (12,)), F.cross_entropy)
    params = arch.params()
    kernel = GradNormKernel(problem, steps=10)
    assert kernel.input_kernel is not None
    state = grp.prepare(arch, params, problem.inputs)
    ev, dparams = get_objective("grad_norm").value_and_gradient(problem, params, state)
    live = [[w, b] for w, b in params]
    fused = initial_state(arch, live, problem.inputs, kernel.acts, kernel.colmajor)
    bw = kernel.backward(live, fused, second=True, value=True, loss=True)
    assert bw.bias_grads[0] is None and ev is not None
    assert float(bw.value) == pytest.approx(float(ev.value), rel=1e-12)
    for step, ref in zip(kernel.algebra_gradient(live, fused, bw), grp.pullback(arch, params, state, dparams),
                         strict=True):
        got = step.dense if step.dense is not None else step.a.mT @ step.b
        assert relative(got, ref) < 1e-10


@pytest.mark.parametrize("group,widths,batch", [("gl-data", (10, 6, 5, 3), 30), ("gl-data", (10, 40, 36, 3), 8),
                                                ("rescale", (10, 6, 5, 3), 30)])
def test_searches_run_in_inference_mode_but_hand_back_ordinary_tensors(group, widths, batch):
    """Closed-form heads and activations let a search run under torch.inference_mode; what it hands
    back (moved weights, numbers, factors read through the record) can be changed in place and used
    by autograd like any tensor."""
    from telebench.symmetry import teleport
    from telebench.symmetry.problem import inference_safe

    torch.manual_seed(10)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.LeakyReLU(0.1))
    model = nn.Sequential(*layers)
    x, y = torch.randn(batch, widths[0]), torch.randint(0, 3, (batch,))
    assert inference_safe(Problem(check_model(model, group), x, y, F.cross_entropy))
    assert not inference_safe(Problem(check_model(model, group), x, y, lambda out, t: F.cross_entropy(out, t) * 2))
    for steps in (1, 3):
        rec = teleport(copy.deepcopy(model), x, y, F.cross_entropy, group=group, steps=steps, lr=0.05)
        assert rec.accepted
        for t in rec.transforms:
            for factor in (t.left_factor, t.right_factor, t.left, t.right):
                assert not factor.is_inference()
                factor.add_(0.0)
        assert rec.algebra_norm > 0
    from telebench.symmetry.search import SearchOptions, search

    problem = Problem(check_model(model, group), x, y, F.cross_entropy)
    outcome = search(problem, get_group(group), get_objective("grad_norm"), SearchOptions(steps=2, lr=0.05))
    tensors = [t for layer in outcome.params for t in layer if t is not None]
    tensors += [outcome.loss_before, outcome.objective_before, *outcome.lefts, *outcome.rights, *outcome.algebra]
    assert outcome.after is not None and outcome.after.loss is not None
    tensors += [outcome.after.value, outcome.after.loss]
    assert not any(t.is_inference() for t in tensors)
    leaf = tensors[0].clone().requires_grad_()
    (leaf * tensors[1].sum()).sum().backward()  # usable by autograd


def test_the_rescale_search_measures_the_loss_at_the_moved_weights():
    """The loss after a rescale teleport comes from a forward pass of the moved network (its input
    layer's pre-activations rescaled, every later layer from its moved weights): the loss a full
    forward pass gives at the moved weights, to rounding."""
    from telebench.symmetry.search import SearchOptions, search

    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 7), nn.LeakyReLU(0.2), nn.Linear(7, 4)).double()
    arch = check_model(model, "rescale")
    problem = Problem(arch, torch.randn(40, 12, dtype=F64), torch.randint(0, 4, (40,)), F.cross_entropy)
    outcome = search(problem, get_group("rescale"), get_objective("grad_norm"), SearchOptions(steps=6, lr=0.5))
    assert outcome.after is not None and outcome.after.loss is not None
    assert not torch.allclose(outcome.params[0][0], arch.params()[0][0])  # it moved
    assert float(outcome.after.loss) == pytest.approx(float(problem.loss(outcome.params)), rel=1e-12)


def test_a_wide_right_factor_is_applied_in_either_order():
    """W (I + Eᵀ K⁻¹ P), as (W Eᵀ)(K⁻¹ P) or ((W Eᵀ) K⁻¹) P, and in place on a weight the search owns."""
    from telebench.symmetry.gl_search import _wide_right

    gen = torch.Generator().manual_seed(12)
    p, e = torch.randn(5, 12, dtype=F64, generator=gen), torch.randn(5, 12, dtype=F64, generator=gen)
    solver = WideSolver(p)
    exact = torch.eye(12, dtype=F64) + e.mT @ torch.linalg.inv(p @ p.mT) @ p
    for rows in (4, 20):  # narrower than the layer: K⁻¹ first; otherwise K⁻¹P first
        w = torch.randn(rows, 12, dtype=F64, generator=gen)
        expected = w @ exact
        got, right = _wide_right(w, e, solver, p, owned=False)
        assert torch.allclose(got, expected) and torch.allclose(right.dense(), exact)
        owned = w.clone()
        got, _ = _wide_right(owned, e, solver, p, owned=True)
        assert got.data_ptr() == owned.data_ptr() and torch.allclose(got, expected)


def test_column_major_products_are_the_same_products_stored_by_columns():
    gen = torch.Generator().manual_seed(8)
    x, w, bias = (torch.randn(*s, dtype=F64, generator=gen) for s in ((50, 7), (5, 7), (5,)))
    c = torch.randn(50, 5, dtype=F64, generator=gen)
    for colmajor in (False, True):
        got = [mm(x, w.mT, colmajor), addmm(c, x, w.mT, colmajor, beta=0.5, alpha=-2.0), linear(x, w, bias, colmajor),
               linear(x, w, None, colmajor)]
        want = [x @ w.mT, 0.5 * c - 2.0 * x @ w.mT, x @ w.mT + bias, x @ w.mT]
        for g, e in zip(got, want, strict=True):
            assert relative(g, e) < 1e-14
            assert column_major(g) is colmajor


def test_the_kernel_keeps_tall_layers_by_columns_on_the_same_path_as_by_rows(monkeypatch):
    """On CPU the batch tensors of layers no wider than the batch are stored column by column (a
    layout MKL and LAPACK take faster); the search lands on the same weights as with rows only."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(12, 8), nn.LeakyReLU(0.1), nn.Linear(8, 6), nn.LeakyReLU(0.1),
                          nn.Linear(6, 3)).double()
    x, y = torch.randn(40, 12, dtype=F64), torch.randint(0, 3, (40,))
    arch = check_model(model, get_group("gl-data"))
    problem = Problem(arch, x, y, F.cross_entropy)
    kernel = GradNormKernel(problem, steps=10)
    assert kernel.colmajor == [True, True, True]
    state = initial_state(arch, [[w, b] for w, b in arch.params()], x, kernel.acts, kernel.colmajor)
    assert all(column_major(t) for t in state.z + state.h + state.slope)
    assert all(s.colmajor for s in state.solvers)

    def moved(by_columns: bool) -> tuple[float, list[torch.Tensor]]:
        m = copy.deepcopy(model)
        with monkeypatch.context() as patch:
            if not by_columns:
                patch.setattr(gl_kernel, "column_major_layer", lambda rows, cols, device: False)
            record = teleport(m, x, y, F.cross_entropy, group="gl-data", steps=5, lr=0.05)
        assert record.accepted
        return record.objective_after, [p.detach().clone() for p in m.parameters()]

    (by_columns, w_columns), (by_rows, w_rows) = moved(True), moved(False)
    assert by_columns == pytest.approx(by_rows, rel=1e-12)
    for a, b in zip(w_columns, w_rows, strict=True):
        assert relative(a, b) < 1e-12


def test_a_loss_through_autograd_gets_row_major_logits():
    """A user's loss may reshape the logits with .view, which a column-major tensor refuses: only a
    closed-form head gets them column by column."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(6, 5), nn.LeakyReLU(0.1), nn.Linear(5, 3)).double()
    x, y = torch.randn(30, 6, dtype=F64), torch.randn(30, 3, dtype=F64)

    def flat_mse(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return ((out.view(-1) - t.view(-1)) ** 2).mean()

    arch = check_model(model, get_group("gl-data"))
    assert GradNormKernel(Problem(arch, x, y, flat_mse), steps=10).colmajor == [True, False]
    assert GradNormKernel(Problem(arch, x, y, F.mse_loss), steps=10).colmajor == [True, True]
    flat, plain = copy.deepcopy(model), copy.deepcopy(model)
    a = teleport(flat, x, y, flat_mse, group="gl-data", steps=5, lr=0.05)
    b = teleport(plain, x, y, F.mse_loss, group="gl-data", steps=5, lr=0.05)
    assert a.accepted and b.accepted and a.objective_after == pytest.approx(b.objective_after, rel=1e-9)
