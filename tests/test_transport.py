"""Optimizer-state transport (docs/state-transport.md): the identities the doc derives, checked numerically.

Notation: a teleport T moves W_m ↦ P_m W_m Q_m, b_m ↦ P_m b_m. For rescale every coordinate is scaled
by a positive factor c (c_ij = p_i q_j for a weight, p_i for a bias), so T(w) = c ⊙ w.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from telebench.errors import UserError
from telebench.training.optimizers import apply_state_policy, make_optimizer
from telebench.training.specs import OptimizerSpec, freeze
from telebench.training.transport import transport_state

F64 = torch.float64


@dataclass
class Move:
    """A LayerTransform look-alike: the test builds its own group elements."""

    layer: int
    left: Tensor
    right: Tensor


# Each adaptive optimizer with eps = 0, the setting where the doc's identities are exact (eps > 0:
# exact with eps replaced by c·eps per coordinate). Several variants exercise every state entry.
CASES = {
    "sgd": ("sgd", {}, 2),
    "momentum": ("momentum", {}, 2),
    "nesterov": ("momentum", {"nesterov": True, "dampening": 0.0}, 2),
    "adagrad": ("adagrad", {"eps": 0.0, "initial_accumulator_value": 0.1, "lr_decay": 0.01}, 1),
    "rmsprop": ("rmsprop", {"eps": 0.0}, 1),
    "rmsprop-centered-momentum": ("rmsprop", {"eps": 0.0, "centered": True, "momentum": 0.9}, 1),
    "adam": ("adam", {"eps": 0.0}, 1),
    "adam-amsgrad": ("adam", {"eps": 0.0, "amsgrad": True}, 1),
}
"""name → (optimizer, kwargs, k): one step from T(w) with per-coordinate lr × c^k lands on T(step from w)."""

COVECTOR = {"momentum_buffer", "exp_avg", "grad_avg"}
SECOND = {"sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq"}


def _mlp(widths: tuple[int, ...] = (5, 7, 6, 3), act: type[nn.Module] = nn.LeakyReLU, bias: bool = True,
         dtype: torch.dtype = F64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(act(0.1) if act is nn.LeakyReLU else act())
    return nn.Sequential(*layers).to(dtype)


def _batch(model: nn.Sequential, seed: int, n: int = 16) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    lin = [m for m in model if isinstance(m, nn.Linear)]
    dtype = lin[0].weight.dtype
    x = torch.randn(n, lin[0].in_features, generator=g, dtype=dtype)
    return x, torch.randn(n, lin[-1].out_features, generator=g, dtype=dtype)


def _step(model: nn.Sequential, optimizer: torch.optim.Optimizer, seed: int) -> None:
    x, y = _batch(model, seed)
    optimizer.zero_grad(set_to_none=True)
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()


def _trained(name: str, kwargs: dict, dtype: torch.dtype = F64, act: type[nn.Module] = nn.LeakyReLU,
             steps: int = 4, widths: tuple[int, ...] = (5, 7, 6, 3), bias: bool = True,
             ) -> tuple[nn.Sequential, torch.optim.Optimizer, OptimizerSpec]:
    spec = OptimizerSpec(name, lr=0.05, kwargs=freeze(kwargs))
    model = _mlp(widths, act=act, bias=bias, dtype=dtype)
    optimizer = make_optimizer(spec, model.parameters())
    for k in range(steps):
        _step(model, optimizer, seed=100 + k)
    return model, optimizer, spec


def _twin(model: nn.Sequential, optimizer: torch.optim.Optimizer, spec: OptimizerSpec):
    """An independent copy of the model and its optimizer state."""
    twin = copy.deepcopy(model)
    opt = make_optimizer(spec, twin.parameters())
    opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return twin, opt


def _linears(model: nn.Sequential) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


def _apply(model: nn.Sequential, moves: list[Move]) -> None:
    """Move the weights in place: W_m ← left_m W_m right_{m-1}, b_m ← left_m b_m."""
    by = {t.layer: t for t in moves}
    with torch.no_grad():
        for m, lin in enumerate(_linears(model)):
            w = lin.weight
            if m - 1 in by:
                w = w @ by[m - 1].right.to(w.dtype)
            if m in by:
                w = by[m].left.to(w.dtype) @ w
                if lin.bias is not None:
                    lin.bias.copy_(by[m].left.to(w.dtype) @ lin.bias)
            lin.weight.copy_(w)


def _rescale(model: nn.Sequential, seed: int, spread: float = 0.7) -> list[Move]:
    g = torch.Generator().manual_seed(seed)
    moves = []
    for m, lin in enumerate(_linears(model)[:-1]):
        s = torch.exp((torch.rand(lin.out_features, generator=g, dtype=F64) * 2 - 1) * spread)
        moves.append(Move(m, torch.diag(s), torch.diag(1 / s)))
    return moves


def _coordinate_scales(model: nn.Sequential, moves: list[Move]) -> list[Tensor]:
    """c per parameter (model.parameters() order) for diagonal moves: T(w) = c ⊙ w."""
    by = {t.layer: t for t in moves}
    out = []
    for m, lin in enumerate(_linears(model)):
        p = torch.diagonal(by[m].left) if m in by else torch.ones(lin.out_features, dtype=F64)
        q = torch.diagonal(by[m - 1].right) if m - 1 in by else torch.ones(lin.in_features, dtype=F64)
        out.append(p[:, None] * q[None, :])
        if lin.bias is not None:
            out.append(p)
    return out


def _outputs(model: nn.Sequential, seed: int = 7) -> Tensor:
    x, _ = _batch(model, seed, n=64)
    with torch.no_grad():
        return model(x)


def _close(a: Tensor, b: Tensor, rtol: float) -> bool:
    return bool(torch.linalg.vector_norm(a - b) <= rtol * max(float(torch.linalg.vector_norm(b)), 1e-300))


# ---- rescale: exact for all five optimizers ----------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_rescale_transport_commutes_with_the_step_and_scaled_steps_give_the_same_function(case: str) -> None:
    name, kwargs, k = CASES[case]
    model, opt, spec = _trained(name, kwargs)
    tele, tele_opt = _twin(model, opt, spec)
    moves = _rescale(model, seed=1)
    scales = _coordinate_scales(model, moves)
    _apply(tele, moves)
    assert _close(_outputs(tele), _outputs(model), 1e-13)  # a level-set move
    tele_opt = apply_state_policy(tele_opt, "transport", spec, list(tele.parameters()), moves)

    start = [p.detach().clone() for p in tele.parameters()]
    _step(model, opt, seed=9)
    _step(tele, tele_opt, seed=9)

    # (1) The state after the step is the transport of the original run's state after its step.
    params, tparams = list(model.parameters()), list(tele.parameters())
    for p, tp, c in zip(params, tparams, scales, strict=True):
        for key, value in opt.state[p].items():
            got = tele_opt.state[tp][key]
            if key == "step":
                expected = value
            elif key in COVECTOR and not (name == "rmsprop" and key == "momentum_buffer"):
                expected = value / c
            elif key in SECOND:
                expected = value / c**2
            else:  # RMSprop's momentum buffer holds normalised steps: invariant under rescaling
                expected = value
            assert _close(got, expected, 1e-12), (case, key)

    # (2) One step from T(w) with per-coordinate lr × c^k is T(one step from w): the same function.
    scaled = copy.deepcopy(tele)
    with torch.no_grad():
        for p, s, t0, c in zip(scaled.parameters(), tparams, start, scales, strict=True):
            p.copy_(t0 + c**k * (s - t0))
    assert _close(_outputs(scaled), _outputs(model), 1e-12), case
    # ... and without the scaling it is a different function (the update is not equivariant).
    assert not _close(_outputs(tele), _outputs(model), 1e-6), case


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_rescale_identity_holds_in_float32_to_rounding(name: str) -> None:
    kwargs = {"eps": 0.0} if name == "adam" else {}
    model, opt, spec = _trained(name, kwargs, dtype=torch.float32)
    tele, tele_opt = _twin(model, opt, spec)
    moves = _rescale(model, seed=2)
    _apply(tele, moves)
    apply_state_policy(tele_opt, "transport", spec, list(tele.parameters()), moves)
    scales = _coordinate_scales(model, moves)
    for p, tp, c in zip(model.parameters(), tele.parameters(), scales, strict=True):
        for key, value in opt.state[p].items():
            if key != "step":
                power = 2 if key in SECOND else 1
                assert _close(tele_opt.state[tp][key].double(), value.double() / c**power, 1e-6), key


def test_rescale_with_default_eps_is_exact_up_to_eps() -> None:
    """Adam's eps breaks exact equivariance only through c·eps, invisible next to √v here."""
    model, opt, spec = _trained("adam", {})
    tele, tele_opt = _twin(model, opt, spec)
    moves = _rescale(model, seed=3)
    scales = _coordinate_scales(model, moves)
    _apply(tele, moves)
    apply_state_policy(tele_opt, "transport", spec, list(tele.parameters()), moves)
    start = [p.detach().clone() for p in tele.parameters()]
    _step(model, opt, seed=9)
    _step(tele, tele_opt, seed=9)
    with torch.no_grad():
        for p, t0, c in zip(tele.parameters(), start, scales, strict=True):
            p.copy_(t0 + c * (p - t0))
    assert _close(_outputs(tele), _outputs(model), 1e-6)


# ---- no-op, round trip, keep vs transport ----------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_identity_transforms_leave_the_state_bit_identical(case: str, dtype: torch.dtype) -> None:
    name, kwargs, _ = CASES[case]
    model, opt, spec = _trained(name, kwargs, dtype=dtype)
    before = copy.deepcopy(opt.state_dict())
    eye = [Move(m, torch.eye(n, dtype=dtype), torch.eye(n, dtype=dtype)) for m, n in enumerate((7, 6))]
    assert apply_state_policy(opt, "transport", spec, list(model.parameters()), eye) is opt
    apply_state_policy(opt, "transport", spec, list(model.parameters()), [])  # a rejected teleport
    apply_state_policy(opt, "transport", spec, list(model.parameters()), None)  # reset-only arms
    after = opt.state_dict()
    for key, state in before["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after["state"][key][field])), (key, field)


@pytest.mark.parametrize("case", ["momentum", "rmsprop-centered-momentum", "adam-amsgrad", "adagrad"])
def test_rescale_transport_there_and_back_restores_the_state(case: str) -> None:
    name, kwargs, _ = CASES[case]
    model, opt, spec = _trained(name, kwargs)
    before = copy.deepcopy(opt.state_dict())
    moves = _rescale(model, seed=4)
    back = [Move(t.layer, t.right, t.left) for t in moves]
    transport_state(opt, list(model.parameters()), moves)
    transport_state(opt, list(model.parameters()), back)
    for key, state in before["state"].items():
        for field, value in state.items():
            assert _close(opt.state_dict()["state"][key][field], value, 1e-14), (key, field)


# ---- linear group (identity activations): dense elements ---------------------------------------------


def _linear_moves(model: nn.Sequential, seed: int, kind: str) -> list[Move]:
    g = torch.Generator().manual_seed(seed)
    moves = []
    for m, lin in enumerate(_linears(model)[:-1]):
        n = lin.out_features
        a = torch.randn(n, n, generator=g, dtype=F64)
        if kind == "general":
            e = torch.linalg.matrix_exp(0.3 * a)
        elif kind == "orthogonal":
            e = torch.linalg.matrix_exp(0.5 * (a - a.mT))
        else:  # a permutation of the hidden units
            e = torch.eye(n, dtype=F64)[torch.randperm(n, generator=g)]
        moves.append(Move(m, e, torch.linalg.inv(e)))
    return moves


def _linear_trained(name: str, kwargs: dict) -> tuple[nn.Sequential, torch.optim.Optimizer, OptimizerSpec]:
    return _trained(name, kwargs, act=nn.Identity)


@pytest.mark.parametrize("case", ["momentum", "nesterov", "adam"])
def test_linear_group_first_moments_are_transported_exactly(case: str) -> None:
    """Covector state (momentum, Adam's m) after a step from T(w) = P⁻ᵀ (state after a step from w) Q⁻ᵀ."""
    name, kwargs, _ = CASES[case]
    model, opt, spec = _linear_trained(name, kwargs)
    tele, tele_opt = _twin(model, opt, spec)
    moves = _linear_moves(model, seed=5, kind="general")
    _apply(tele, moves)
    assert _close(_outputs(tele), _outputs(model), 1e-12)
    transport_state(tele_opt, list(tele.parameters()), moves)
    _step(model, opt, seed=9)
    _step(tele, tele_opt, seed=9)
    by = {t.layer: t for t in moves}
    lin, tlin = _linears(model), _linears(tele)
    for m, (a, b) in enumerate(zip(lin, tlin, strict=True)):
        for p, tp in ((a.weight, b.weight), (a.bias, b.bias)):
            x = opt.state[p]["momentum_buffer" if name == "momentum" else "exp_avg"]
            if m in by:
                x = torch.linalg.solve(by[m].left.mT, x)  # P⁻ᵀ x
            if m - 1 in by and x.dim() == 2:
                x = torch.linalg.solve(by[m - 1].right, x.mT).mT  # x Q⁻ᵀ
            got = tele_opt.state[tp]["momentum_buffer" if name == "momentum" else "exp_avg"]
            assert _close(got, x, 1e-11), (case, m)


def test_linear_group_sgd_momentum_step_is_a_preconditioned_step() -> None:
    """T⁻¹(one step from T(w)) = w − (PᵀP)⁻¹ Δ (QQᵀ)⁻¹ per layer, Δ the original step (exact)."""
    model, opt, spec = _linear_trained("momentum", {})
    tele, tele_opt = _twin(model, opt, spec)
    moves = _linear_moves(model, seed=6, kind="general")
    _apply(tele, moves)
    transport_state(tele_opt, list(tele.parameters()), moves)
    w0 = [p.detach().clone() for p in model.parameters()]
    _step(model, opt, seed=9)
    _step(tele, tele_opt, seed=9)
    by = {t.layer: t for t in moves}
    lin, tlin = _linears(model), _linears(tele)
    i = 0
    for m, (a, b) in enumerate(zip(lin, tlin, strict=True)):
        for p, tp in ((a.weight, b.weight), (a.bias, b.bias)):
            delta, back = w0[i] - p.detach(), tp.detach()
            if m in by:
                left = by[m].left
                delta = torch.linalg.solve(left.mT @ left, delta)
                back = torch.linalg.solve(left, back)
            if m - 1 in by and delta.dim() == 2:
                right = by[m - 1].right
                delta = torch.linalg.solve(right @ right.mT, delta.mT).mT
                back = torch.linalg.solve(right.mT, back.mT).mT
            assert _close(back, w0[i] - delta, 1e-11), (m, p.dim())
            i += 1


@pytest.mark.parametrize(("kind", "cases"), [
    ("orthogonal", ["sgd", "momentum", "nesterov"]),
    ("permutation", list(CASES)),
])
def test_linear_group_updates_that_are_equivariant_give_the_same_function(kind: str, cases: list[str]) -> None:
    """GD and momentum are equivariant under orthogonal g; every optimizer here under permutations
    (monomial g, where the second-moment rule is exact). With transport, five further steps from the
    teleported point compute the same function as from the original one; with keep they do not."""
    for case in cases:
        name, kwargs, _ = CASES[case]
        model, opt, spec = _linear_trained(name, kwargs)
        tele, tele_opt = _twin(model, opt, spec)
        kept, kept_opt = _twin(model, opt, spec)
        moves = _linear_moves(model, seed=7, kind=kind)
        _apply(tele, moves)
        _apply(kept, moves)
        transport_state(tele_opt, list(tele.parameters()), moves)
        for k in range(5):
            for mod, o in ((model, opt), (tele, tele_opt), (kept, kept_opt)):
                _step(mod, o, seed=20 + k)
        assert _close(_outputs(tele), _outputs(model), 1e-11), (kind, case)
        if case != "sgd":  # plain SGD has no state: keep and transport coincide
            assert not _close(_outputs(kept), _outputs(model), 1e-6), (kind, case)


def test_dense_second_moments_use_the_squared_inverse_rule() -> None:
    """V' = (P⁻ᵀ ⊙ P⁻ᵀ) V (Q⁻ᵀ ⊙ Q⁻ᵀ): the uncorrelated-coordinates approximation, non-negative."""
    model, opt, spec = _linear_trained("adam", {})
    before = copy.deepcopy(opt.state_dict())
    moves = _linear_moves(model, seed=8, kind="general")
    transport_state(opt, list(model.parameters()), moves)
    lin = _linears(model)
    w1 = lin[1].weight
    a = torch.linalg.inv(moves[1].left).mT
    b = torch.linalg.inv(moves[0].right).mT
    old = before["state"][2]["exp_avg_sq"]  # parameters: w0, b0, w1, ...
    new = opt.state[w1]["exp_avg_sq"]
    assert _close(new, (a * a) @ old @ (b * b), 1e-13)
    assert bool((new >= 0).all())


# ---- gl-data, through the real teleport ------------------------------------------------------------


def _move_like_gradient(t: Tensor, m: int, is_weight: bool, by: dict[int, Move]) -> Tensor:
    """P⁻ᵀ t Q⁻ᵀ, computed by solves (independently of the implementation's explicit inverses)."""
    if m in by:
        t = torch.linalg.solve(by[m].left.mT, t)
    if is_weight and m - 1 in by:
        t = torch.linalg.solve(by[m - 1].right, t.mT).mT
    return t


@pytest.mark.parametrize("act", [nn.LeakyReLU, nn.Identity])
def test_gl_data_transport_follows_the_recorded_factors(act: type[nn.Module]) -> None:
    """gl-data's linearisation: momentum ↦ g⁻ᵀ · buf · A⁻ᵀ with A the recorded least-squares factor.
    With identity activations, no bias, widths that narrow and batch > width, every σ(Z_m) has full
    row rank, so the least-squares factor is exactly g⁻¹: gl-data is the linear group, and the
    transported gradient is the gradient at the new point."""
    from telebench.symmetry import teleport

    model, opt, spec = _trained("momentum", {}, steps=6, act=act, widths=(8, 6, 5, 3), bias=False)
    x, y = _batch(model, seed=50, n=40)  # batch > width: the least-squares regime of the paper
    params = list(model.parameters())
    grad_before = torch.autograd.grad(nn.functional.mse_loss(model(x), y), params)
    buf_before = [opt.state[p]["momentum_buffer"].clone() for p in params]
    record = teleport(model, x, y, nn.functional.mse_loss, group="gl-data", steps=10, lr=0.1, tolerance=1.0)
    assert record.accepted and record.relative_weight_change > 1e-2
    apply_state_policy(opt, "transport", spec, params, record.transforms)
    grad_after = torch.autograd.grad(nn.functional.mse_loss(model(x), y), params)
    by = {t.layer: t for t in record.transforms}
    for i, p in enumerate(params):
        m, is_weight = i, True
        assert _close(opt.state[p]["momentum_buffer"], _move_like_gradient(buf_before[i], m, is_weight, by), 1e-11)
        if act is nn.Identity:
            assert _close(_move_like_gradient(grad_before[i], m, is_weight, by), grad_after[i], 1e-8), i


def test_rescale_through_the_real_teleport_record() -> None:
    from telebench.symmetry import teleport

    model, opt, spec = _trained("adam", {"eps": 0.0})
    twin, twin_opt = _twin(model, opt, spec)
    x, y = _batch(model, seed=51, n=30)
    record = teleport(twin, x, y, nn.functional.mse_loss, group="rescale", steps=10, lr=0.5,
                      normalize_step=True)
    assert record.accepted and len(record.transforms) == 2
    apply_state_policy(twin_opt, "transport", spec, list(twin.parameters()), record.transforms)
    scales = _coordinate_scales(model, record.transforms)
    assert max(float((c.log()).abs().max()) for c in scales) > 0.05  # a real move
    for p, tp, c in zip(model.parameters(), twin.parameters(), scales, strict=True):
        assert _close(twin_opt.state[tp]["exp_avg"], opt.state[p]["exp_avg"] / c, 1e-12)
        assert _close(twin_opt.state[tp]["exp_avg_sq"], opt.state[p]["exp_avg_sq"] / c**2, 1e-12)


# ---- errors -------------------------------------------------------------------------------------------


def test_bad_transforms_and_unsupported_optimizers_are_clear_errors() -> None:
    model, opt, spec = _trained("momentum", {})
    params = list(model.parameters())
    good = _rescale(model, seed=1)
    with pytest.raises(ValueError, match=r"one transform per hidden layer 0\.\.1, got layers \[0\]"):
        transport_state(opt, params, good[:1])
    with pytest.raises(ValueError, match=r"left factor of hidden layer 1 has shape \(7, 7\), but the layer has 6"):
        transport_state(opt, params, [good[0], Move(1, torch.eye(7, dtype=F64), torch.eye(6, dtype=F64))])
    singular = torch.ones(7, 7, dtype=F64)
    with pytest.raises(ValueError, match="left factor of hidden layer 0 is singular"):
        transport_state(opt, params, [Move(0, singular, torch.eye(7, dtype=F64)), good[1]])
    adamax = torch.optim.Adamax(params, lr=0.01)
    _step(model, adamax, seed=3)
    with pytest.raises(UserError, match="no rule for Adamax"):
        transport_state(adamax, params, good)
    with pytest.raises(ValueError, match="weight, then its bias"):
        transport_state(opt, [params[1], params[0]], good)
