"""Small numerical kernels the groups need: a matrix exponential, its companion φ for low-rank
elements, a fixed-matrix least-squares solver, and matrix products whose result is stored column by
column (for batch × width tensors of narrow layers, see :func:`column_major_layer`)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


@functools.lru_cache(maxsize=64)
def eye(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An identity matrix made once per (size, dtype, device); callers never write into it (made
    outside inference mode, so autograd may use it later)."""
    with torch.inference_mode(False):
        return torch.eye(n, dtype=dtype, device=device)


def column_major_layer(rows: int, cols: int, device: torch.device) -> bool:
    """Whether a layer's ``rows × cols`` batch tensors (rows = the batch) are best kept column by
    column: on CPU, for tall layers (``rows ≥ cols``). LAPACK's QR and triangular solves take such
    a matrix without transposing it, and MKL's GEMM writes a result with few columns 2–4× faster
    column-major than row-major (one thread, AMD EPYC: a 200 × 16 by 16 × 10 product 3.2 against
    7.2 µs, 2000 × 16 by 16 × 10 12 against 54 µs; no slower from 16 columns up). On accelerators
    the libraries choose their own layouts."""
    return device.type == "cpu" and rows >= cols > 1


def column_major(t: Tensor) -> bool:
    """Whether the matrix ``t`` is stored column by column (its transpose is contiguous)."""
    return t.dim() == 2 and t.shape[1] > 1 and t.mT.is_contiguous()


def mm(a: Tensor, b: Tensor, colmajor: bool) -> Tensor:
    """``a @ b``, the result column-major when ``colmajor`` (computed as ``(bᵀ aᵀ)ᵀ``, the same sums)."""
    return torch.mm(b.mT, a.mT).mT if colmajor else torch.mm(a, b)


def addmm(c: Tensor, a: Tensor, b: Tensor, colmajor: bool, beta: float = 1.0, alpha: float = 1.0) -> Tensor:
    """``beta·c + alpha·a @ b`` for a matrix ``c``, the result column-major when ``colmajor``."""
    if colmajor:
        return torch.addmm(c.mT, b.mT, a.mT, beta=beta, alpha=alpha).mT
    return torch.addmm(c, a, b, beta=beta, alpha=alpha)


def linear(x: Tensor, w: Tensor, bias: Tensor | None, colmajor: bool) -> Tensor:
    """``F.linear(x, w, bias)``, the result column-major when ``colmajor``."""
    if not colmajor:
        return torch.nn.functional.linear(x, w, bias)
    return (torch.mm(w, x.mT) if bias is None else torch.addmm(bias.unsqueeze(1), w, x.mT)).mT


def expm(a: Tensor) -> Tensor:
    """Matrix exponential of a batch of square matrices (``… × n × n``), by scaling and squaring a
    Taylor series, without host synchronisation on accelerators.

    ``torch.linalg.matrix_exp`` reads the norms on the host to pick its degree, one synchronisation
    per call on CUDA, and on CPU it is slow for the small matrices a teleport uses. Here, on CPU
    (where reading a norm is free) the degree and number of squarings follow the actual norm, so
    the small steps of a teleport cost a few matrix products; elsewhere both are fixed for the
    dtype and the squarings are masked on the device (:func:`expm_on_device`). Scaling to
    ‖A/2ˢ‖₁ ≤ 1 and stopping the series below a quarter of the unit roundoff keeps the result
    within a few ulps times 2ˢ of the exact exponential.
    """
    if a.device.type != "cpu":
        return expm_on_device(a)
    norm = float(torch.linalg.matrix_norm(a.detach(), ord=1).amax())
    if not norm <= _MAX_NORM:  # inf, NaN, or beyond any squaring count: torch's own (NaN, rejected later)
        return torch.linalg.matrix_exp(a)
    squarings = max(0, math.ceil(math.log2(norm))) if norm > 1 else 0
    xn = norm / 2**squarings
    degree, term = 1, xn * xn / 2  # term = ‖x‖^(p+1) / (p+1)!; the remainder is below 1.5·term for ‖x‖ ≤ 1
    while term > _TAYLOR_TOLERANCE[a.dtype] and degree < 30:
        degree += 1
        term *= xn / (degree + 1)
    e = _taylor(a / 2**squarings if squarings else a, degree)
    for _ in range(squarings):
        e = e @ e
    return e


_MAX_NORM = 2.0**64  # beyond it exp(A) is no usable group element, and 2^-s underflows the scaling
_TAYLOR_TOLERANCE = {torch.float16: 2.5e-4, torch.bfloat16: 2e-3, torch.float32: 3e-8, torch.float64: 5e-17}
_DEVICE_DEGREE = {torch.float16: 6, torch.bfloat16: 5, torch.float32: 10, torch.float64: 18}  # 1/(p+1)! ≤ tolerance
_DEVICE_SQUARINGS = 12  # accurate for ‖A‖₁ ≤ 4096; larger arguments lose accuracy rather than synchronise


def expm_all(mats: list[Tensor], scale: float | Tensor = 1.0) -> list[Tensor]:
    """:func:`expm` of ``scale`` times each of several square matrices of different sizes, with one
    degree and number of squarings for all, chosen from the largest Frobenius norm (a bound on the
    spectral norm, which is what the Taylor remainder needs). On CPU, one norm read per matrix and
    no more, and ``scale`` is folded into the series (``scale·A`` is never formed)."""
    if not mats:
        return []
    if mats[0].device.type != "cpu":
        return [expm_on_device(m if isinstance(scale, float) and scale == 1.0 else scale * m) for m in mats]
    c = float(scale)
    norm = abs(c) * max(float(n) for n in torch._foreach_norm(mats))
    if not norm <= _MAX_NORM:
        return [torch.linalg.matrix_exp(c * m) for m in mats]
    squarings = max(0, math.ceil(math.log2(norm))) if norm > 1 else 0
    xn = norm / 2**squarings
    degree, term = 1, xn * xn / 2
    while term > _TAYLOR_TOLERANCE[mats[0].dtype] and degree < 30:
        degree += 1
        term *= xn / (degree + 1)
    out = []
    for m in mats:
        e = _taylor(m, degree, c / 2**squarings)
        for _ in range(squarings):
            e = e @ e
        out.append(e)
    return out


def expm_on_device(a: Tensor) -> Tensor:
    """The synchronisation-free variant: scale by 2⁻ˢ with s = ⌈log₂‖A‖₁⌉ computed on the device,
    a Taylor series of fixed degree, then 12 squarings of which only the first s take effect."""
    norm = torch.linalg.matrix_norm(a, ord=1)
    s = torch.log2(norm).ceil().clamp(0, _DEVICE_SQUARINGS)
    e = _taylor(a * torch.exp2(-s)[..., None, None], _DEVICE_DEGREE[a.dtype])
    for i in range(_DEVICE_SQUARINGS):
        e = torch.where((s > i)[..., None, None], e @ e, e)
    return e


def phi(a: Tensor, adaptive: bool | None = None, scale: float | Tensor = 1.0) -> Tensor:
    """φ(cA) = (exp(cA) − I)·(cA)⁻¹ = Σ_j (cA)^j/(j+1)! for one square matrix and a scalar
    ``c = scale``, so that exp(uᵀv) = I + uᵀ φ(v uᵀ) v for ``k × n`` factors u, v: the exponential of
    a rank-k Lie-algebra element from a k × k series, without forming an n × n matrix.

    Scaling and squaring as :func:`expm`: the series at cA/2ˢ, then s doublings
    φ(2X) = φ(X) + φ(X)·X·φ(X)/2. On CPU the degree and s follow the norm and c is folded into the
    series (cA is never formed); elsewhere they are fixed and the doublings masked on the device
    (``adaptive`` picks either way explicitly)."""
    if not (a.device.type == "cpu" if adaptive is None else adaptive):
        return _phi_on_device(a if isinstance(scale, float) and scale == 1.0 else scale * a, a.dtype)
    c = float(scale)
    norm = abs(c) * float(torch.linalg.matrix_norm(a.detach(), ord=1))
    if not norm <= _MAX_NORM:
        return torch.full_like(a, math.nan)
    squarings = max(0, math.ceil(math.log2(norm))) if norm > 1 else 0
    xn = norm / 2**squarings
    degree, term = 1, xn * xn / 6  # ‖x‖^(p+1)/(p+2)!: the first dropped term for ‖x‖ ≤ 1
    while term > _TAYLOR_TOLERANCE[a.dtype] and degree < 30:
        degree += 1
        term *= xn / (degree + 2)
    alpha = c / 2**squarings  # x = alpha·A
    one = eye(a.shape[-1], a.dtype, a.device)
    f = torch.add(one, a, alpha=alpha / (degree + 1))
    for k in range(degree, 1, -1):
        f = torch.addmm(one, a, f, alpha=alpha / k)
    for _ in range(squarings):
        f = torch.addmm(f, f, a @ f, alpha=0.5 * alpha)  # φ(2x) = φ(x) + φ(x)·x·φ(x)/2
        alpha *= 2
    return f


def _phi_on_device(x: Tensor, dtype: torch.dtype) -> Tensor:
    """φ with a fixed degree and 12 masked doublings, without host synchronisation."""
    scale = torch.log2(torch.linalg.matrix_norm(x, ord=1)).ceil().clamp(0, _DEVICE_SQUARINGS)
    x = x * torch.exp2(-scale)
    degree = _DEVICE_DEGREE[dtype]
    one = eye(x.shape[-1], x.dtype, x.device)
    f = torch.add(one, x, alpha=1 / (degree + 1))
    for k in range(degree, 1, -1):
        f = torch.addmm(one, x, f, alpha=1 / k)
    for i in range(_DEVICE_SQUARINGS):
        f = torch.where(scale > i, torch.addmm(f, f, x @ f, alpha=0.5), f)
        x = torch.where(scale > i, x * 2, x)
    return f


def _taylor(x: Tensor, degree: int, alpha: float = 1.0) -> Tensor:
    """I + y + y²/2 + … + y^p/p! for y = alpha·x, by Horner's rule (y is never formed)."""
    one = eye(x.shape[-1], x.dtype, x.device)
    e = torch.add(one, x, alpha=alpha / degree)
    if x.dim() == 2:
        for k in range(degree - 1, 0, -1):
            e = torch.addmm(one, x, e, alpha=alpha / k)
        return e
    flat_x = x.reshape(-1, *x.shape[-2:])
    e = e.reshape(flat_x.shape)
    for k in range(degree - 1, 0, -1):
        e = torch.baddbmm(one, flat_x, e, alpha=alpha / k)
    return e.reshape(x.shape)


class LeastSquares:
    """Minimum-norm least squares ``D = argmin ‖P D − E‖`` for one fixed ``P`` (b × n), via one QR.

    Tall P (b ≥ n, full column rank): P = Q R and D = R⁻¹ Qᵀ E. Wide P (b < n): Pᵀ = Q R and the
    minimum-norm solution is D = Q R⁻ᵀ E. QR keeps the error proportional to cond(P) (normal equations
    square it), handles both shapes on CUDA (torch.linalg.lstsq's CUDA driver takes only tall
    matrices), back-propagates through triangular solves instead of lstsq's SVD-based backward,
    and never forms the pseudo-inverse. A rank-deficient P gives non-finite weights, which the
    teleport's invariance check rejects.
    """

    def __init__(self, p: Tensor) -> None:
        self.tall = p.shape[0] >= p.shape[1]
        self.q, self.r = torch.linalg.qr(p if self.tall else p.mT)

    def solve(self, e: Tensor) -> Tensor:
        """P⁺ E."""
        if self.tall:
            return torch.linalg.solve_triangular(self.r, self.q.mT @ e, upper=True)
        return self.q @ torch.linalg.solve_triangular(self.r.mT, e, upper=False)

    def solve_adjoint(self, f: Tensor) -> Tensor:
        """(P⁺)ᵀ F."""
        if self.tall:
            return self.q @ torch.linalg.solve_triangular(self.r.mT, f, upper=False)
        return torch.linalg.solve_triangular(self.r, self.q.mT @ f, upper=True)

    def residual(self, x: Tensor) -> Tensor:
        """(I − P P⁺) X: the part of X outside P's column span (zero when P has full row rank)."""
        return x - self.q @ (self.q.mT @ x) if self.tall else torch.zeros_like(x)
