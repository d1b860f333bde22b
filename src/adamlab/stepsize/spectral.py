r"""The Hessian's spectral norm $\|H\|_2 = \max_i |\lambda_i|$ from Hessian-vector products only.

Three methods, all seeded and all working on vectors kept as lists of parameter-shaped tensors on the
parameters' device:

* ``"power"``: power iteration on $H$, one product per iteration. With $u$ a unit vector,
  $s = \|Hu\|$, the signed Rayleigh quotient $\lambda = u^\top H u$ and the residual $r = \|Hu - \lambda u\|$;
  then $u \leftarrow Hu/s$. It stops when $|s_k - s_{k-1}| \le \max(\text{rtol}\cdot s_k, \text{atol})$.
  $s \le \|H\|_2$ for every unit $u$, so the estimate approaches the norm from below; for symmetric $H$ some
  eigenvalue lies within $r$ of $\lambda$ (the a-posteriori error).
* ``"power_h2"``: the procedure of the AdamDDS authors' ``hessian.py`` (spec §4.3): two products per iteration
  ($v = Hu/\|Hu\|$, $u \leftarrow Hv/\|Hv\|$, i.e. power iteration on $H^2$), the estimate $\sigma = \|Hu\|$ from
  the first product, and the tolerance compared with a previous value that starts at 0.
* ``"lanczos"``: Lanczos with full re-orthogonalisation. The estimate is the Ritz value of largest magnitude of
  the tridiagonal matrix; it stops when that Ritz pair's residual $\beta_k |y_k|$ is within
  $\max(\text{rtol}\cdot|\theta|, \text{atol})$, or on an invariant subspace. It stores one vector per iteration.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .hvp import HessianVectorProduct, Vector

METHODS = ("power", "power_h2", "lanczos")


@dataclass
class SpectralNormResult:
    spectral_norm: float  # the estimate of max |lambda|
    rayleigh_quotient: float  # signed u^T H u at the final vector: the sign of the dominant eigenvalue
    residual: float  # ||H u - lambda u|| (power) or the Ritz residual (lanczos): the a-posteriori error
    iterations: int
    converged: bool
    trace: list[float]  # the estimate after each iteration
    method: str
    hvp_count: int
    degenerate: bool = False  # H u = 0: the estimate is 0 and says nothing about ||H||
    vector: Vector | None = field(default=None, repr=False)  # the final unit vector (a warm start for a similar H)


def seeded_generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from ``parts`` (e.g. seed, init index, batch index): independent streams per batch
    that never touch the global RNG."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return torch.Generator().manual_seed(int(digest[:15], 16))


def random_unit_vector(like: Sequence[Tensor], generator: torch.Generator) -> Vector:
    """A Gaussian direction, drawn in fp32 on the CPU (so the same seed gives the same start on any device and in
    any precision), normalised, in ``like``'s dtypes and devices."""
    vector = [torch.randn(t.shape, generator=generator, dtype=torch.float32).to(t.device, t.dtype) for t in like]
    return _scaled(vector, 1.0 / _norm(vector))


def hessian_spectral_norm(
    loss_fn: Callable[[], Tensor],
    params: Sequence[Tensor] | nn.Module,
    *,
    model: nn.Module | None = None,
    max_iter: int = 50,
    rtol: float = 1e-3,
    atol: float | None = None,
    seed: int = 0,
    method: str = "power",
    hvp: str = "auto",
) -> SpectralNormResult:
    r"""Estimate $\|\nabla^2 L\|_2$ for the scalar ``loss_fn()`` (a zero-argument closure) with respect to
    ``params`` at their current values.

    ``params``: a list of tensors, or a module (then its trainable parameters, and ``model`` is that module).
    ``model``: the module owning ``params``, needed only by ``hvp="jvp"``. ``hvp``: the product engine (see
    :mod:`adamlab.stepsize.hvp`). The start vector comes from a generator seeded with ``seed`` alone.
    """
    if isinstance(params, nn.Module):
        model, params = params, [p for p in params.parameters() if p.requires_grad]
    product = HessianVectorProduct(loss_fn, params, model=model, engine=hvp)
    start = random_unit_vector(product.params, seeded_generator(seed))
    return spectral_norm(product, start, method=method, max_iter=max_iter, rtol=rtol, atol=atol)


def spectral_norm(
    hvp: Callable[[Vector], Vector],
    start: Vector,
    *,
    method: str = "power",
    max_iter: int = 50,
    rtol: float = 1e-3,
    atol: float | None = None,
) -> SpectralNormResult:
    r"""Estimate $\|H\|_2$ for the symmetric operator ``hvp`` from the unit-norm (or any non-zero) ``start``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if rtol < 0 or (atol is not None and atol < 0):
        raise ValueError(f"tolerances must be >= 0, got rtol={rtol}, atol={atol}")
    start_norm = _norm(start)
    if not start_norm > 0:
        raise ValueError("the start vector is zero")
    start = _scaled(start, 1.0 / start_norm)

    def within_tolerance(change: float, estimate: float) -> bool:
        return change <= max(rtol * estimate, atol or 0.0)

    run = {"power": _power, "power_h2": _power_h2, "lanczos": _lanczos}[method]
    return run(hvp, start, max_iter, within_tolerance)


def _power(hvp, u: Vector, max_iter: int, within_tolerance) -> SpectralNormResult:
    trace: list[float] = []
    previous = None
    for k in range(1, max_iter + 1):
        hu = hvp(u)
        s, lam = _norm(hu), _dot(u, hu)
        residual = _norm(_added(hu, u, -lam))
        trace.append(_finite(s))
        if s == 0:
            return SpectralNormResult(0.0, 0.0, 0.0, k, False, trace, "power", k, degenerate=True, vector=u)
        u = _scaled(hu, 1.0 / s)
        if previous is not None and within_tolerance(abs(s - previous), s):
            return SpectralNormResult(s, lam, residual, k, True, trace, "power", k, vector=u)
        previous = s
    return SpectralNormResult(s, lam, residual, max_iter, False, trace, "power", max_iter, vector=u)


def _power_h2(hvp, u: Vector, max_iter: int, within_tolerance) -> SpectralNormResult:
    trace: list[float] = []
    previous = 0.0  # as in hessian.py: the first comparison is against 0
    for k in range(1, max_iter + 1):
        hu = hvp(u)
        sigma, lam = _norm(hu), _dot(u, hu)
        residual = _norm(_added(hu, u, -lam))
        trace.append(_finite(sigma))
        if sigma == 0:
            return SpectralNormResult(0.0, 0.0, 0.0, k, False, trace, "power_h2", 2 * k - 1, degenerate=True,
                                      vector=u)
        hv = hvp(_scaled(hu, 1.0 / sigma))
        hv_norm = _finite(_norm(hv))
        if hv_norm == 0:
            return SpectralNormResult(sigma, lam, residual, k, False, trace, "power_h2", 2 * k, degenerate=True,
                                      vector=u)
        u = _scaled(hv, 1.0 / hv_norm)
        if within_tolerance(abs(sigma - previous), sigma):
            return SpectralNormResult(sigma, lam, residual, k, True, trace, "power_h2", 2 * k, vector=u)
        previous = sigma
    return SpectralNormResult(sigma, lam, residual, max_iter, False, trace, "power_h2", 2 * max_iter, vector=u)


def _lanczos(hvp, q: Vector, max_iter: int, within_tolerance) -> SpectralNormResult:
    basis: list[Vector] = [q]
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    trace: list[float] = []
    for k in range(1, max_iter + 1):
        w = hvp(basis[-1])
        diagonal.append(_dot(basis[-1], w))
        # Full re-orthogonalisation, twice ("twice is enough"): without it, lost orthogonality in floating point
        # produces spurious copies of converged Ritz values.
        for _ in range(2):
            for b in basis:
                w = _added(w, b, -_dot(b, w))
        beta = _norm(w)
        ritz_values, ritz_vectors = torch.linalg.eigh(_tridiagonal(diagonal, off_diagonal))
        j = int(ritz_values.abs().argmax())
        theta, y = ritz_values[j].item(), ritz_vectors[:, j].tolist()
        estimate = _finite(abs(theta))
        residual = beta * abs(y[-1])
        trace.append(estimate)
        invariant = beta <= 1e-12 * estimate  # the Krylov space holds an eigenvector: the Ritz value is exact
        converged = invariant or within_tolerance(residual, estimate)
        if converged or k == max_iter:
            break
        off_diagonal.append(beta)
        basis.append(_scaled(w, 1.0 / beta))
    if estimate == 0 and beta == 0:  # H q = 0
        return SpectralNormResult(0.0, 0.0, 0.0, k, False, trace, "lanczos", k, degenerate=True, vector=basis[0])
    ritz_vector = _combination(basis, y)
    return SpectralNormResult(estimate, theta, residual, k, converged, trace, "lanczos", k,
                              vector=_scaled(ritz_vector, 1.0 / _norm(ritz_vector)))


def _tridiagonal(diagonal: list[float], off_diagonal: list[float]) -> Tensor:
    matrix = torch.diag(torch.tensor(diagonal, dtype=torch.float64))
    if off_diagonal:
        off = torch.tensor(off_diagonal, dtype=torch.float64)
        matrix += torch.diag(off, 1) + torch.diag(off, -1)
    return matrix


# Vectors are lists of parameter-shaped tensors; reductions come back as Python floats (fp64).

def _dot(a: Vector, b: Vector) -> float:
    return math.fsum(torch.vdot(x.flatten(), y.flatten()).item() for x, y in zip(a, b))


def _norm(a: Vector) -> float:
    return math.sqrt(math.fsum(torch.vdot(x.flatten(), x.flatten()).item() for x in a))


def _scaled(a: Vector, factor: float) -> Vector:
    return [x * factor for x in a]


def _added(a: Vector, b: Vector, factor: float) -> Vector:
    return [x + factor * y for x, y in zip(a, b)]


def _combination(vectors: list[Vector], coefficients: list[float]) -> Vector:
    out = _scaled(vectors[0], coefficients[0])
    for vector, c in zip(vectors[1:], coefficients[1:]):
        out = _added(out, vector, c)
    return out


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"a Hessian-vector product is not finite ({value}); check the loss and its inputs")
    return value
