r"""The Adaptive Edge of Stability bound (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge of
Stability", arXiv 2207.14484): the largest learning rate at which an optimizer stays stable on the local quadratic
model of the loss, given the preconditioner it has built up.

On a quadratic with Hessian $H$ and a frozen diagonal preconditioner $P$, an update $\eta P^{-1} m_t$ with
exponential-moving-average momentum $m_t = \beta m_{t-1} + (1 - \beta) g_t$ is stable iff

.. math::

    \lambda_{\max}(P^{-1} H) < \frac{2 + 2\beta}{(1 - \beta)\,\eta}
    \quad\Longleftrightarrow\quad
    \eta < \eta_{\max} = \frac{2 + 2\beta}{(1 - \beta)\,\lambda_{\max}(P^{-1} H)},

and heavy-ball momentum $m_t = \mu m_{t-1} + g_t$ (``torch.optim.SGD``) is stable iff
$\eta < (2 + 2\mu) / \lambda_{\max}(P^{-1} H)$. Each eigen-direction of $P^{-1/2} H P^{-1/2}$ is a scalar linear
recurrence whose roots leave the unit disc exactly there; only positive curvature can make it oscillate and grow,
so the bound uses the largest *algebraic* eigenvalue, not the largest magnitude.

The preconditioner is the optimizer's own, read from its state after ``warmup_steps`` real steps at a small
learning rate (at $w_0$ it is undefined, and LoRA's $B = 0$ start makes the curvature there unrepresentative):

* second-moment methods (Adam, AdamW, NAdam, RAdam, AMSGrad, Yogi...): $P = \mathrm{diag}(\sqrt{\hat v} + \epsilon)$
  with $\hat v = v / (1 - \beta_2^t)$, $\beta = \beta_1$;
* AdaBelief: the same with its belief $s$ (the EMA of $(g - m)^2$) in place of $v$;
* Lion, whose update is $\mathrm{sign}(c)$ for the interpolated momentum $c$: $\mathrm{sign}(c) = c / |c|$, so
  $P = \mathrm{diag}(|m| + \epsilon)$ with its momentum $m$ and $\beta = \beta_1$ (an approximation: the sign is
  a preconditioner that changes with every step, so the bound is indicative);
* SGD: $P = I$ (the raw Hessian) with heavy-ball momentum $\mu$;
* Adam-mini: its one second moment per block, broadcast over the block;
* bitsandbytes' 8-bit and paged Adam/AdamW: the second moment dequantized from its blocks;
* Adagrad: $P = \mathrm{diag}(\sqrt{\textstyle\sum g^2} + \epsilon)$, no momentum;
* factored second moments, $\hat v_{ij} = r_i c_j / \mathrm{mean}(r)$ for a matrix and the full $v$ for a vector:
  Adafactor (Hugging Face's and torch's; torch's scales each step by the parameter's RMS, so that RMS divides $P$;
  no momentum unless Hugging Face's ``beta1`` is set) and CAME, whose step divides the momentum of $g / \sqrt{\hat v}$
  once more by the root of its factored instability $S$: $P = \sqrt{\hat v} \odot \sqrt{S}$;
* schedule-free AdamW: Adam's $P$ on the $z$ sequence, which takes plain preconditioned steps with the gradient at
  $y = (1 - \beta) z + \beta x$; as the average $x$ settles, $z$ is stable iff
  $\eta < 2 / ((1 - \beta) \lambda_{\max})$;
* LAMB: Adam's $P$ (without bias correction of $v$) divided by each layer's trust ratio, frozen like $P$;
* SM3: the root of the least accumulator covering each coordinate, with its optional EMA momentum;
* wrappers: Lookahead's inner (fast) optimizer, the active phase of a Switch.

Refused, with the reason: D-Adaptation and Prodigy (the lr multiplies a step size they estimate themselves, so it
is not a step size on the loss) and LDAdam's low-rank matrices (their update lives in a projected subspace: no
diagonal $P$ in the parameter's coordinates).

$\lambda_{\max}$ comes from Lanczos on the symmetric $P^{-1/2} H P^{-1/2}$ (the same eigenvalues as $P^{-1} H$)
with Hessian-vector products: its largest Ritz value converges fast and is the largest algebraic eigenvalue
whatever the sign of the dominant one.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..optim.lookahead import Lookahead
from ..optim.switch import Switch
from .hvp import HessianVectorProduct, Vector, resolve_parameters, restored_afterwards
from .spectral import _added, _dot, _norm, _scaled, random_unit_vector, seeded_generator

LION_EPS = 1e-8  # Lion has no eps of its own; this keeps P invertible where the momentum is exactly zero
MOMENTUM_KINDS = ("ema", "heavy_ball", "schedule_free")


def seeded_batches(n: int, batch_size: int, seed: int, stream: str) -> Iterator[list[int]]:
    """Consecutive batches of index shuffles of range(n), a new seeded shuffle per pass (the whole set when
    n < batch_size)."""
    generator = seeded_generator(seed, stream)
    while True:
        permutation = torch.randperm(n, generator=generator).tolist()
        for start in range(0, max(n - batch_size + 1, 1), batch_size):
            yield permutation[start : start + batch_size]


def stability_threshold(sharpness: float, beta: float, momentum: str = "ema") -> float:
    r"""$\eta_{\max}$ for the preconditioned sharpness $\lambda_{\max}(P^{-1} H)$: $(2 + 2\beta) / ((1 - \beta)
    \lambda)$ for EMA momentum, $(2 + 2\beta)/\lambda$ for heavy-ball, $2 / ((1 - \beta) \lambda)$ for
    schedule-free interpolation; ``inf`` when there is no positive curvature."""
    if momentum not in MOMENTUM_KINDS:
        raise ValueError(f"momentum must be one of {', '.join(map(repr, MOMENTUM_KINDS))}, got {momentum!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    if not sharpness > 0:
        return math.inf
    if momentum == "schedule_free":
        return 2 / ((1 - beta) * sharpness)
    damping = (1 - beta) if momentum == "ema" else 1.0
    return (2 + 2 * beta) / (damping * sharpness)


@dataclass
class Preconditioner:
    """What an optimizer's state says about its stability: the diagonal of $P$ per parameter, and the momentum."""

    kind: str  # second_moment | belief | sign | adagrad | factored | lamb | sm3 | identity
    diagonal: Vector
    beta: float
    momentum: str  # one of MOMENTUM_KINDS
    active: Vector | None = None  # 1 where the warm-up saw a gradient, 0 elsewhere (None: everywhere)


def optimizer_preconditioner(optimizer: torch.optim.Optimizer, params: Sequence[Tensor]) -> Preconditioner:
    """Read $P$ and the momentum from ``optimizer``'s state for ``params`` (after at least one step). The
    optimizer is recognised by its state and hyperparameters, so any implementation with these layouts works."""
    while isinstance(optimizer, (Lookahead, Switch)):  # the optimizer that takes the steps
        optimizer = optimizer.optimizer if isinstance(optimizer, Lookahead) else optimizer.active
    group = optimizer.param_groups[0]
    state = optimizer.state[params[0]] if params[0] in optimizer.state else {}
    name = type(optimizer).__name__
    refusal = _refusal(group, state, [optimizer.state.get(p, {}) for p in params])
    if refusal is not None:
        raise ValueError(f"the AEoS bound has no translation for {name}: {refusal}")
    if "exp_avg_var" in state:
        return _second_moment(optimizer, params, ("exp_avg_var",), "belief")
    if "vmean" in state or "v" in state and "m" in state:  # Adam-mini: blocked (vmean) or full (v) second moments
        return _second_moment(optimizer, params, ("vmean", "v"), "second_moment")
    if "trust_ratio" in state:
        return _lamb(optimizer, params)
    if "accumulator_0" in state:
        return _sm3(optimizer, params)
    if "exp_avg_sq" in state or "max_exp_avg_sq" in state:
        if "z" in state:
            return _schedule_free(optimizer, params)
        if "clip_threshold" in group:  # CAME, Hugging Face's Adafactor: factored matrices, full vectors
            return _factored(optimizer, params)
        return _second_moment(optimizer, params, ("max_exp_avg_sq",) if group.get("amsgrad") else ("exp_avg_sq",),
                              "second_moment")
    if "exp_avg_sq_row" in state or "row_var" in state or "variance" in state:
        return _factored(optimizer, params)
    if "state2" in state:  # bitsandbytes' 8-bit and paged Adam/AdamW
        return _second_moment(optimizer, params, ("state2",), "second_moment")
    if "sum" in state and "lr_decay" in group:  # Adagrad
        diagonal = [optimizer.state[p]["sum"].to(_compute_dtype(p)).sqrt() + group["eps"] for p in params]
        return Preconditioner("adagrad", diagonal, 0.0, "ema", _seen_gradients(optimizer, params, "sum"))
    if "betas" in group and "exp_avg" in state and "eps" not in group:
        diagonal = [optimizer.state[p]["exp_avg"].abs().to(_compute_dtype(p)) + LION_EPS for p in params]
        return Preconditioner("sign", diagonal, float(group["betas"][0]), "ema", _seen(optimizer, params))
    if "momentum" in group and "betas" not in group:
        return Preconditioner("identity", [torch.ones_like(p, dtype=_compute_dtype(p)) for p in params],
                              float(group["momentum"]), "heavy_ball")
    raise ValueError(f"the AEoS bound has no translation for {name}; it supports optimizers "
                     "with a second moment (exp_avg_sq: the Adam family, Adam-mini, bitsandbytes' 8-bit Adam, LAMB), "
                     "a belief (exp_avg_var: AdaBelief), factored second moments (Adafactor, CAME), Adagrad, SM3, "
                     "sign updates (Lion), schedule-free AdamW and SGD")


def _refusal(group: dict, state: dict, states: list[dict]) -> str | None:
    """Why an optimizer with a state the translations below would misread has no bound, or None."""
    if "d0" in group or "growth_rate" in group:
        return ("it sets its own step size (D-Adaptation, Prodigy): lr multiplies the step size d it estimates, "
                "so train with lr 1.0, its default")
    if any("projector" in s for s in states):
        return ("LDAdam's low-rank matrices take their update in a projected subspace, with no diagonal "
                "preconditioner in the parameter's coordinates")
    if group.get("relative_step"):
        return "Adafactor with relative_step=True ignores lr (its step size is 1/sqrt(t)); pass relative_step=False"
    return None


def _compute_dtype(p: Tensor) -> torch.dtype:
    return torch.promote_types(p.dtype, torch.float32)  # bf16 states and parameters in fp32


def _second_moment(optimizer, params, keys: tuple[str, ...], kind: str) -> Preconditioner:
    """sqrt(v / (1 - beta2^t)) + eps, with v the first of ``keys`` each parameter's state holds."""
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    diagonal = []
    for p in params:
        state = optimizer.state[p]
        correction = 1 - beta2 ** float(state["step"])
        second = _dequantized(state, next(key for key in keys if key in state)).to(_compute_dtype(p))
        if second.numel() != p.numel():  # Adam-mini: one second moment per block of consecutive elements
            second = second.reshape(-1, 1).expand(second.numel(), p.numel() // second.numel())
        diagonal.append(((second / correction).sqrt() + group["eps"]).reshape(p.shape))
    return Preconditioner(kind, diagonal, float(beta1), "ema", _seen(optimizer, params))


def _schedule_free(optimizer, params) -> Preconditioner:
    """Schedule-free AdamW: Adam's P (bias-corrected by its step count ``k``) on its z sequence."""
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    correction = 1 - beta2 ** float(group["k"])
    diagonal = [(optimizer.state[p]["exp_avg_sq"].to(_compute_dtype(p)) / correction).sqrt() + group["eps"]
                for p in params]
    return Preconditioner("second_moment", diagonal, float(beta1), "schedule_free",
                          _seen_gradients(optimizer, params, "exp_avg_sq"))


def _lamb(optimizer, params) -> Preconditioner:
    """LAMB (pytorch-optimizer's): the step is lr x trust ratio x m_hat / (sqrt(v) + eps), v not bias-corrected, the
    trust ratio ||w|| / ||update|| one number per parameter, frozen like P (its last value; 1 with ``adam=True``).
    A rectified LAMB's early steps are smaller still, so the bound holds for it as well."""
    group = optimizer.param_groups[0]
    diagonal = []
    for p in params:
        state = optimizer.state[p]
        trust_ratio = 1.0 if group.get("adam") else float(state["trust_ratio"])
        diagonal.append((state["exp_avg_sq"].to(_compute_dtype(p)).sqrt() + group["eps"]) / trust_ratio)
    return Preconditioner("lamb", diagonal, float(group["betas"][0]), "ema", _seen(optimizer, params))


def _sm3(optimizer, params) -> Preconditioner:
    """SM3: g / sqrt(nu + eps) with nu_ij the least of the accumulators covering ij (a row's and a column's for a
    matrix; the accumulators hold the largest nu each cover saw), then optional EMA momentum. Leaving out the next
    g^2 that nu adds makes P smaller and the bound lower: on the safe side."""
    group = optimizer.param_groups[0]
    diagonal = []
    for p in params:
        state = optimizer.state[p]
        nu = state["accumulator_0"]
        for i in range(1, p.dim()):
            nu = torch.minimum(nu, state[f"accumulator_{i}"])
        diagonal.append((nu.to(_compute_dtype(p)) + group["eps"]).sqrt().expand(p.shape))
    active = _seen_gradients(optimizer, params, "momentum_buffer") if group["momentum"] > 0 else None
    return Preconditioner("sm3", diagonal, float(group["momentum"]), "ema", active)


def _dequantized(state: dict, key: str) -> Tensor:
    """The state tensor ``key``, dequantized where bitsandbytes keeps it in 8-bit blocks (a uint8 code per element,
    an absmax per block of 256)."""
    values = state[key]
    if values.dtype != torch.uint8:
        return values
    # imported here, not with this module: bitsandbytes is an optional extra, and such a state only exists where
    # it is installed (importing it costs seconds and prints warnings on CPU)
    bnb_functional = importlib.import_module("bitsandbytes.functional")
    number = key.removeprefix("state")
    absmax, code = state[f"absmax{number}"], state[f"qmap{number}"]
    blocksize = 1 << math.ceil(math.log2(math.ceil(values.numel() / absmax.numel())))
    return bnb_functional.dequantize_blockwise(values, absmax=absmax, code=code, blocksize=blocksize)


def _factored(optimizer, params) -> Preconditioner:
    r"""Adafactor's and CAME's $P$: per matrix $\sqrt{r_i c_j / \mathrm{mean}(r)}$ from the row and column
    statistics (CAME: times the same of its instability), per vector the root of its full second moment."""
    group = optimizer.param_groups[0]
    diagonal = []
    for p in params:
        state, dtype = optimizer.state[p], _compute_dtype(p)
        if "row_var" in state:  # torch.optim.Adafactor: (..., n, 1) and (..., 1, m) statistics, clamped at eps1
            eps1 = group["eps"][0] if group["eps"][0] is not None else torch.finfo(p.dtype).eps
            row, col = state["row_var"].to(dtype), state["col_var"].to(dtype)
            second = (row @ col / row.mean(dim=-2, keepdim=True).clamp(min=eps1)).clamp(min=eps1 * eps1)
        elif "variance" in state:
            eps1 = group["eps"][0] if group["eps"][0] is not None else torch.finfo(p.dtype).eps
            second = state["variance"].to(dtype).clamp(min=eps1 * eps1)
        elif "exp_avg_sq_row" in state:
            second = _outer_over_mean(state["exp_avg_sq_row"].to(dtype), state["exp_avg_sq_col"].to(dtype))
        else:
            second = state["exp_avg_sq"].to(dtype)
        root = second.sqrt()
        if "exp_avg_res_row" in state:  # CAME's confidence: its step divides m by sqrt(S) as well
            instability = _outer_over_mean(state["exp_avg_res_row"].to(dtype), state["exp_avg_res_col"].to(dtype))
            root = root * instability.sqrt()
        if "row_var" in state or "variance" in state or group.get("scale_parameter"):
            # the step is lr x max(eps2, RMS(p)) x the update: a larger parameter takes a larger step
            root = root / max(group["eps"][1], (p.detach().to(dtype).norm() / math.sqrt(p.numel())).item())
        diagonal.append(root.expand(p.shape))
    beta1 = group["betas"][0] if "betas" in group else group.get("beta1")  # Adafactor's momentum is optional
    # with momentum, the coordinates it moved (as for Adam); without, a factored P is nowhere as small as eps
    active = _seen(optimizer, params) if "exp_avg" in optimizer.state[params[0]] else None
    return Preconditioner("factored", diagonal, float(beta1 or 0.0), "ema", active)


def _outer_over_mean(row: Tensor, col: Tensor) -> Tensor:
    r"""$r c^\top / \mathrm{mean}(r)$ over the last two dims, from statistics shaped (..., n) and (..., m)."""
    return (row / row.mean(dim=-1, keepdim=True)).unsqueeze(-1) * col.unsqueeze(-2)


def _seen_gradients(optimizer, params, key: str) -> Vector:
    """1 where the warm-up's accumulated squares are non-zero (an optimizer without momentum)."""
    return [(optimizer.state[p][key] != 0).to(_compute_dtype(p)) for p in params]


def _seen(optimizer, params) -> Vector:
    """1 where the warm-up's momentum is non-zero. Coordinates that never had a gradient (the embedding rows of
    tokens the warm-up did not see) have P = eps, which would inflate their curvature by 1/eps; but Adam's first
    step on a coordinate is about lr in size whatever its gradient, so the frozen-P model does not hold there and
    they are left out of lambda_max."""
    # m by its name in adamlab and torch, Adam-mini's official code and bitsandbytes
    key = next(key for key in ("exp_avg", "m", "state1") if key in optimizer.state[params[0]])
    return [(_dequantized(optimizer.state[p], key) != 0).to(_compute_dtype(p)).reshape(p.shape) for p in params]


@dataclass
class SharpnessResult:
    sharpness: float  # the largest algebraic eigenvalue of P^{-1/2} H P^{-1/2}, floored at 0
    dominant: float  # the extreme Ritz value of largest magnitude (signed): the eigenvalue power iteration would find
    converged: bool
    hvp_count: int


def preconditioned_sharpness(hvp: Callable[[Vector], Vector], diagonal: Vector, start: Vector, *,
                             active: Vector | None = None, max_iter: int = 20, rtol: float = 1e-2) -> SharpnessResult:
    r"""$\lambda_{\max}(P^{-1} H)$ as the largest eigenvalue of $P^{-1/2} H P^{-1/2}$, with ``hvp`` the product
    with $H$ and ``diagonal`` $P$'s diagonal (same shapes as the vectors); ``active`` (0/1, same shapes) restricts
    it to the coordinates marked 1. Lanczos, not power iteration: its largest Ritz value converges in fewer
    products and is the largest *algebraic* eigenvalue even when the dominant one is negative (from-scratch Llama:
    13 products to rtol 1e-2, 0.04% from the converged value, where 20 power iterations were 8% low; full MiniLM
    fine-tune, dominant eigenvalue negative: 18 products where power iteration then Lanczos took 30). The default
    ``rtol`` of 1e-2 is far inside what the bound is used for (a fraction of it, compared on a grid of factor
    sqrt(10))."""
    active = active if active is not None else [torch.ones_like(d) for d in diagonal]
    scale = [(d.rsqrt() * a).to(s.dtype) for d, a, s in zip(diagonal, active, start)]

    def product(vector: Vector) -> Vector:
        return [s * hv for s, hv in zip(scale, hvp([s * v for s, v in zip(scale, vector)]))]

    largest, smallest, converged, count = extreme_eigenvalues(product, start, max_iter=max_iter, rtol=rtol)
    dominant = smallest if abs(smallest) > abs(largest) else largest
    return SharpnessResult(max(largest, 0.0), dominant, converged, count)


def extreme_eigenvalues(product: Callable[[Vector], Vector], start: Vector, *, max_iter: int,
                        rtol: float) -> tuple[float, float, bool, int]:
    """The largest and smallest algebraic eigenvalues of a symmetric operator by Lanczos with full
    re-orthogonalisation: its extreme Ritz values converge fast even when the spectrum is crowded near the top,
    where a power iteration cannot separate them (spectral.py's Lanczos tracks the largest magnitude instead).
    Returns (largest, smallest, converged, products). Stops when the largest Ritz pair's residual is within rtol
    of it."""
    basis = [_scaled(start, 1 / _norm(start))]
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    converged = False
    for k in range(1, max_iter + 1):
        w = product(basis[-1])
        diagonal.append(_dot(basis[-1], w))
        for _ in range(2):  # full re-orthogonalisation, twice: lost orthogonality breeds spurious Ritz values
            for b in basis:
                w = _added(w, b, -_dot(b, w))
        beta = _norm(w)
        tridiagonal = torch.diag(torch.tensor(diagonal, dtype=torch.float64))
        if off_diagonal:
            off = torch.tensor(off_diagonal, dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        values, vectors = torch.linalg.eigh(tridiagonal)
        largest, smallest = values[-1].item(), values[0].item()
        residual = beta * abs(vectors[-1, -1].item())
        if residual <= rtol * abs(largest) or beta <= 1e-12 * max(abs(smallest), abs(largest)):
            converged = True
            break
        off_diagonal.append(beta)
        basis.append(_scaled(w, 1 / beta))
    return largest, smallest, converged, k


@dataclass
class AEoSBound:
    eta_max: float  # the stability bound on the learning rate (inf: no positive curvature seen)
    sharpness: float  # lambda_max(P^-1 H), the maximum over the batches
    batch_sharpness: list[float]
    dominant_eigenvalues: list[float]
    converged_fraction: float
    preconditioner: str
    beta: float
    momentum: str
    warmup_steps: int
    warmup_lr: float
    warmup_loss: list[float]
    batch_size: int
    n_batches: int
    max_iter: int
    hvp_count: int
    seed: int
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def aeos_bound(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, list], Tensor],
    data: Sequence,
    make_optimizer: Callable[[list[Tensor], float], torch.optim.Optimizer],
    *,
    params: str | Sequence[Tensor] = "trainable",
    warmup_steps: int = 10,
    warmup_lr: float = 1e-4,
    batch_size: int = 16,
    n_batches: int = 2,
    max_iter: int = 20,
    rtol: float = 1e-2,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> AEoSBound:
    """The AEoS bound of the optimizer ``make_optimizer(params, lr)`` builds, for ``loss_fn(model, batch)``:
    ``warmup_steps`` steps at ``warmup_lr`` on seeded batches of ``data`` (training mode), then the preconditioned
    sharpness at the warmed-up weights on ``n_batches`` further batches (eval mode). The model comes back as it
    was: parameter values, gradients, mode and the global RNG. ``progress(done, total)`` is called after each
    warm-up step and each batch's sharpness."""
    for name, value, minimum in (("warmup_steps", warmup_steps, 1), ("batch_size", batch_size, 1),
                                 ("n_batches", n_batches, 1), ("max_iter", max_iter, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if not warmup_lr > 0:
        raise ValueError(f"warmup_lr must be > 0, got {warmup_lr}")
    data = list(data)
    if not data:
        raise ValueError("no examples for the AEoS bound")
    tensors = [p for _, p in resolve_parameters(model, params)]
    started = time.perf_counter()
    with restored_afterwards(model, tensors, seed):
        order = seeded_batches(len(data), batch_size, seed, "aeos")
        optimizer = make_optimizer(tensors, warmup_lr)
        if callable(getattr(optimizer, "train", None)):  # schedule-free optimizers step only in their train mode
            optimizer.train()
        model.train()
        warmup_loss = []
        for _ in range(warmup_steps):
            for p in tensors:
                p.grad = None
            loss = loss_fn(model, [data[i] for i in next(order)])
            if not torch.isfinite(loss):
                raise ValueError(f"the loss is not finite during the AEoS warm-up at lr {warmup_lr}")
            loss.backward()
            optimizer.step()
            warmup_loss.append(loss.item())
            if progress is not None:
                progress(len(warmup_loss), warmup_steps + n_batches)
        for p in tensors:
            p.grad = None
        preconditioner = optimizer_preconditioner(optimizer, tensors)
        del optimizer
        model.eval()
        results = []
        for b in range(n_batches):
            batch = [data[i] for i in next(order)]
            product = HessianVectorProduct(lambda: loss_fn(model, batch), tensors, model=model)
            start = random_unit_vector(tensors, seeded_generator(seed, "aeos", b))
            results.append(preconditioned_sharpness(product, preconditioner.diagonal, start,
                                                    active=preconditioner.active, max_iter=max_iter, rtol=rtol))
            del product
            if progress is not None:
                progress(warmup_steps + b + 1, warmup_steps + n_batches)

    sharpness = max(r.sharpness for r in results)
    return AEoSBound(
        eta_max=stability_threshold(sharpness, preconditioner.beta, preconditioner.momentum),
        sharpness=sharpness, batch_sharpness=[r.sharpness for r in results],
        dominant_eigenvalues=[r.dominant for r in results],
        converged_fraction=sum(r.converged for r in results) / len(results), preconditioner=preconditioner.kind,
        beta=preconditioner.beta, momentum=preconditioner.momentum, warmup_steps=warmup_steps, warmup_lr=warmup_lr,
        warmup_loss=warmup_loss, batch_size=batch_size, n_batches=n_batches, max_iter=max_iter,
        hvp_count=sum(r.hvp_count for r in results), seed=seed, wall_time_s=time.perf_counter() - started,
    )
