"""Fused optimizer updates: each optimizer's step as one ``torch.compile``d function over lists of tensors.

An optimizer step reads and writes every parameter, gradient and state tensor once, so it is bound by memory
bandwidth. The foreach paths sweep the whole list once per ``torch._foreach_*`` op (about ten sweeps per step);
the functions here are compiled with ``fullgraph=True, dynamic=False`` so inductor fuses the whole update of
each tensor into one loop (C++/OpenMP on CPU, Triton on CUDA), the way ``torch.optim.AdamW(fused=True)`` does
with hand-written kernels. torch has no fused kernels for these algorithms, and inductor already generates
them from the readable update, so nothing is written by hand below the functional form, with two exceptions where
inductor cannot reach the memory roofline: Adam-mini's blocked step and CAME's factored step on CPU
(``csrc/adam_mini_step.cpp`` and ``csrc/came_step.cpp``, below).

How the compiled functions stay reusable:

* one compiled graph per (device, dtype) group of a step, as torch.optim groups its fused/foreach kernels;
* every float the update needs (lr, betas, bias corrections, the sign for ``maximize``, a decay factor of 1
  when there is no decay) arrives in one ``scalars`` tensor with a row per parameter, never as a Python float:
  a compiled graph specialises on Python numbers, so a schedule's new lr would recompile every step. The
  options that change which tensors exist (``amsgrad``...) stay Python bools: one graph each;
* the scalars are float32 for float32/bfloat16/float16 tensors (eager arithmetic turns a Python scalar into the
  op's float32 compute type the same way) and float64 for float64 tensors, so fused equals the single-tensor
  reference to float rounding;
* graphs of the same shapes are shared by every optimizer instance and, through inductor's on-disk cache,
  across processes.

Each ``fused_<name>`` function has the signature of the module's ``_single_tensor_<name>``, so an optimizer's
``step`` only picks the function. The per-step scalars are computed in Python with the same expressions as
the reference helpers (in double precision, as the reference does); the parity tests in
tests/optim/test_fused.py hold the two together.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.utils import cpp_extension

__all__ = [
    "check_fused",
    "fused_unavailable_reason",
    "use_fused",
    "fused_adabelief",
    "fused_adabound",
    "fused_adamw",
    "fused_came",
    "fused_hybrid_adam_sgd",
    "fused_lion",
    "fused_yogi",
]

# dynamo keeps a handful of graphs per function by default, then silently runs it eagerly. Each list of shapes,
# dtype and option set is one graph here (a model's decayed and undecayed groups are two, tests run dozens).
RECOMPILE_LIMIT = 256


# --- availability and dispatch --------------------------------------------------------------------


def check_fused(fused: bool | None, foreach: bool | None) -> None:
    """Constructor check: ``fused`` is None/True/False and not combined with ``foreach=True``."""
    if fused is not None and not isinstance(fused, bool):
        raise ValueError(f"Invalid fused: {fused!r} (expected True, False or None)")
    if fused and foreach:
        raise ValueError("fused=True and foreach=True cannot both be set: pick one path")


@functools.cache
def fused_unavailable_reason(device_type: str) -> str | None:
    """Why the compiled path cannot run on ``device_type`` here, or None when it can."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python"
    if device_type == "cpu":
        compiler = os.environ.get("CXX", "g++")
        if shutil.which(compiler) is None and shutil.which("c++") is None:
            return f"inductor needs a C++ compiler on CPU and neither {compiler!r} nor 'c++' is on PATH"
        return None
    if device_type == "cuda":
        if not torch.utils._triton.has_triton():
            return "inductor needs Triton on CUDA and it is not installed for this GPU"
        return None
    return f"no compiled path for device type {device_type!r} (cpu and cuda only)"


@functools.cache
def _warn_fallback(reason: str) -> None:
    """One warning per distinct reason and process, not one per step."""
    warnings.warn(f"fused optimizer step unavailable, using the foreach path: {reason}", RuntimeWarning, stacklevel=4)


def use_fused(group: dict, params: Sequence[Tensor]) -> bool:
    """Whether ``group`` asked for the fused path and every parameter's device can run it; warns (once) and
    returns False when it cannot, so the caller falls back to its foreach path."""
    if not group.get("fused"):
        return False
    # inside a compiled training step the update is traced into that graph: the outer compile already runs
    for device_type in [] if torch.compiler.is_compiling() else sorted({p.device.type for p in params}):
        reason = fused_unavailable_reason(device_type)
        if reason is not None:
            _warn_fallback(reason)
            return False
    if any(p.is_complex() for p in params):
        _warn_fallback("complex parameters step as real pairs on the foreach path")
        return False
    for p in params:
        if not p.is_floating_point() or p.is_sparse:
            raise RuntimeError(f"fused=True needs dense floating-point parameters, got {p.dtype} ({p.layout})")
    return True


def _compiled(update: Callable, **inductor_options) -> Callable:
    """``update`` compiled once per process (graphs are then looked up by shapes, dtype and options). Inside an
    outer ``torch.compile`` (a compiled training step) the plain function is traced into the outer graph.
    ``inductor_options`` patch inductor's config for this function's graphs only."""
    compiled = torch.compile(update, fullgraph=True, dynamic=False, options=inductor_options or None)

    @functools.wraps(update)
    def run(*args, **kwargs):
        if torch.compiler.is_compiling():
            return update(*args, **kwargs)
        limits = dict(recompile_limit=RECOMPILE_LIMIT, accumulated_recompile_limit=4 * RECOMPILE_LIMIT)
        with torch._dynamo.config.patch(**limits):
            return compiled(*args, **kwargs)

    return run


def _groups(tensorlists: list[list[Tensor]]) -> Iterator[tuple[list[list[Tensor]], list[int], torch.device]]:
    """Split parallel lists by (device, dtype), as torch.optim's fused kernels do; with the original positions."""
    grouped = Optimizer._group_tensors_by_device_and_dtype(tensorlists, with_indices=True)
    for (device, _), (lists, positions) in grouped.items():
        yield [list(t) for t in lists], list(positions), device


def _scalars(rows: list[list[float]], device: torch.device, *tensors: Tensor) -> Tensor:
    """Per-parameter scalars in the compute type eager arithmetic uses for ``tensors`` (the parameters, and the
    state where it can be wider): float64 when any is float64, float32 otherwise."""
    compute = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    if torch.compiler.is_compiling() or torch.device(device).type != "cuda":
        return torch.tensor(rows, dtype=compute, device=device)
    # A copy from pageable memory waits for the GPU to finish the queued work; from pinned memory (torch's caching
    # host allocator: no new pinning per step) it is queued like the kernels, so an eager step never syncs.
    return torch.tensor(rows, dtype=compute).pin_memory().to(device, non_blocking=True)


def _lerp(start: Tensor, end: Tensor, weight: Tensor) -> Tensor:
    """``torch.lerp`` with a 0-dim float32 weight on tensors of any float dtype (eager's formula, both halves)."""
    diff = end - start
    return torch.where(weight < 0.5, start + weight * diff, end - diff * (1 - weight))


def _sign(maximize: bool) -> float:
    return -1.0 if maximize else 1.0


# --- Lion ------------------------------------------------------------------------------------------


def _lion_update(params, grads, exp_avgs, scalars):
    for i, (param, grad, exp_avg) in enumerate(zip(params, grads, exp_avgs)):
        sign, decay, neg_lr, beta1, one_minus_beta1, beta2, one_minus_beta2 = scalars[i].unbind()
        grad = grad * sign
        update = (exp_avg * beta1 + grad * one_minus_beta1).sign()
        param.copy_(param * decay + update * neg_lr)
        exp_avg.copy_(exp_avg * beta2 + grad * one_minus_beta2)


_lion_kernel = _compiled(_lion_update)


def fused_lion(params, grads, exp_avgs, *, lr, beta1, beta2, weight_decay, maximize) -> None:
    row = [_sign(maximize), 1 - lr * weight_decay, -lr, beta1, 1 - beta1, beta2, 1 - beta2]
    for (ps, gs, ms), positions, device in _groups([params, grads, exp_avgs]):
        _lion_kernel(ps, gs, ms, _scalars([row] * len(positions), device, ps[0]))


# --- AdaBelief ------------------------------------------------------------------------------------


def _adabelief_update(params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars, scalars, amsgrad: bool, use_max: bool):
    for i, (param, grad, exp_avg, exp_avg_var) in enumerate(zip(params, grads, exp_avgs, exp_avg_vars)):
        sign, decay, l2, one_minus_beta1, beta2, one_minus_beta2, eps, denom_eps, adaptive, sgd = scalars[i].unbind()
        grad = grad * sign + param * l2  # l2 is 0 with decoupled decay, decay is 1 without it
        param = param.copy_(param * decay)
        new_exp_avg = exp_avg.copy_(_lerp(exp_avg, grad, one_minus_beta1))
        residual = grad - new_exp_avg
        new_var = exp_avg_var.copy_(exp_avg_var * beta2 + residual * residual * one_minus_beta2 + eps)
        if amsgrad:
            new_max = max_exp_avg_vars[i].copy_(torch.maximum(max_exp_avg_vars[i], new_var))
        # the plain update normalises by the AMSGrad maximum when it is kept (use_max), the rectified one by s_t
        denom = (new_max if use_max else new_var).sqrt() + denom_eps
        # one of the two terms is 0: an adaptive step, an SGD-with-momentum step (rectified, rho_t < 5) or none
        param.copy_(param + adaptive * (new_exp_avg / denom) + sgd * new_exp_avg)


_adabelief_kernel = _compiled(_adabelief_update)


def fused_adabelief(
    params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars, steps, *, lr, beta1, beta2, eps, weight_decay,
    amsgrad, weight_decouple, fixed_decay, rectify, degenerated_to_sgd, maximize,
) -> None:
    if weight_decouple:
        decay, l2 = (1.0 - weight_decay if fixed_decay else 1.0 - lr * weight_decay), 0.0
    else:
        decay, l2 = 1.0, weight_decay
    rows = []
    for step in steps:
        if not rectify:
            c = math.sqrt(1 - beta2**step)
            denom_eps, adaptive, sgd = eps * c, -lr * c / (1 - beta1**step), 0.0
        else:  # the reference's rectification term, expression for expression
            beta2_t = beta2**step
            n_sma_max = 2 / (1 - beta2) - 1
            n_sma = n_sma_max - 2 * step * beta2_t / (1 - beta2_t)
            denom_eps = eps
            if n_sma >= 5:
                rect = (1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max / (n_sma_max - 2)
                adaptive, sgd = -(math.sqrt(rect) / (1 - beta1**step)) * lr, 0.0
            else:
                adaptive, sgd = 0.0, (-(1.0 / (1 - beta1**step)) * lr if degenerated_to_sgd else 0.0)
        rows.append([_sign(maximize), decay, l2, 1 - beta1, beta2, 1 - beta2, eps, denom_eps, adaptive, sgd])
    lists = [params, grads, exp_avgs, exp_avg_vars] + ([max_exp_avg_vars] if amsgrad else [])
    for device_lists, positions, device in _groups(lists):
        maxes = device_lists[4] if amsgrad else []
        scalars = _scalars([rows[i] for i in positions], device, device_lists[0][0])
        _adabelief_kernel(*device_lists[:4], maxes, scalars, amsgrad, amsgrad and not rectify)


# --- AdaBound -------------------------------------------------------------------------------------


def _adabound_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, scalars, amsbound: bool):
    for i, (param, grad, exp_avg, exp_avg_sq) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        sign, l2, one_minus_beta1, beta2, one_minus_beta2, eps, neg_step, denom_min, denom_max = scalars[i].unbind()
        grad = grad * sign + param * l2
        new_exp_avg = exp_avg.copy_(_lerp(exp_avg, grad, one_minus_beta1))
        new_sq = exp_avg_sq.copy_(exp_avg_sq * beta2 + grad * grad * one_minus_beta2)
        if amsbound:
            new_sq = max_exp_avg_sqs[i].copy_(torch.maximum(max_exp_avg_sqs[i], new_sq))
        denom = torch.clamp(new_sq.sqrt() + eps, min=denom_min, max=denom_max)
        param.copy_(param + neg_step * (new_exp_avg / denom))


_adabound_kernel = _compiled(_adabound_update)


def fused_adabound(
    params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr, final_lr, beta1, beta2, gamma, eps,
    weight_decay, amsbound, maximize,
) -> None:
    rows = []
    for step in steps:
        if final_lr == 0:  # both bounds 0: the moments move, the parameter does not
            neg_step, denom_min, denom_max = 0.0, 0.0, math.inf
        else:  # the reference's bounds moved onto the denominator, as in adabound._denominator_bounds
            step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
            lower = final_lr * (1 - 1 / (gamma * step + 1))
            upper = final_lr * (1 + 1 / (gamma * step))
            neg_step, denom_min = -step_size, step_size / upper
            denom_max = step_size / lower if lower > 0 else math.inf
        rows.append([_sign(maximize), weight_decay, 1 - beta1, beta2, 1 - beta2, eps, neg_step, denom_min, denom_max])
    lists = [params, grads, exp_avgs, exp_avg_sqs] + ([max_exp_avg_sqs] if amsbound else [])
    for device_lists, positions, device in _groups(lists):
        maxes = device_lists[4] if amsbound else []
        scalars = _scalars([rows[i] for i in positions], device, device_lists[0][0])
        _adabound_kernel(*device_lists[:4], maxes, scalars, amsbound)


# --- Yogi -----------------------------------------------------------------------------------------


def _yogi_update(params, grads, exp_avgs, exp_avg_sqs, scalars):
    for i, (param, grad, exp_avg, exp_avg_sq) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        sign, l2, one_minus_beta1, neg_one_minus_beta2, eps_t, neg_step = scalars[i].unbind()
        grad = grad * sign + param * l2
        new_exp_avg = exp_avg.copy_(_lerp(exp_avg, grad, one_minus_beta1))
        signed_grad = (exp_avg_sq - grad * grad).sign() * grad
        new_sq = exp_avg_sq.copy_(exp_avg_sq + signed_grad * grad * neg_one_minus_beta2)
        param.copy_(param + neg_step * (new_exp_avg / (new_sq.sqrt() + eps_t)))


_yogi_kernel = _compiled(_yogi_update)


def fused_yogi(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay, maximize) -> None:
    rows = []
    for step in steps:  # bias corrections folded into eps and the step size, as yogi._step_constants
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        eps_t, neg_step = eps * bias_correction2_sqrt, -lr * bias_correction2_sqrt / (1 - beta1**step)
        rows.append([_sign(maximize), weight_decay, 1 - beta1, -(1 - beta2), eps_t, neg_step])
    for device_lists, positions, device in _groups([params, grads, exp_avgs, exp_avg_sqs]):
        _yogi_kernel(*device_lists, _scalars([rows[i] for i in positions], device, device_lists[0][0]))


# --- AdamW (LDAdam's full-rank groups, Adam-mini) -------------------------------------------------


def _block_mean_square(grad: Tensor, exp_avg_sq: Tensor) -> Tensor:
    """Adam-mini's g^2 averaged over each block, the blocks read off the second moment's shape: one per tensor
    (0-dim), one per row ((blocks, 1), grad viewed a block per row) or none (full size), as
    ``adam_mini._block_mean_square`` takes them. Traced into the compiled graphs, never run eagerly."""
    square = grad * grad
    if exp_avg_sq.dim() == 0:
        return square.sum() / max(square.numel(), 1)
    if exp_avg_sq.shape == grad.shape:
        return square
    return square.mean(dim=1, keepdim=True)


def _adamw_update(params, grads, exp_avgs, exp_avg_sqs, grad_squares, scalars, has_squares: bool):
    # Adam-mini's second moment is one value per block row or per tensor: it broadcasts over m (viewed a block
    # per row) and takes the block means of g^2 instead of the elementwise g^2: given in grad_squares (summed
    # over ranks), or taken here where the entry is None
    for i, (param, grad, exp_avg, exp_avg_sq) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        sign, decay, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step = scalars[i].unbind()
        if has_squares:
            square = _block_mean_square(grad, exp_avg_sq) if grad_squares[i] is None else grad_squares[i]
        grad = grad.to(exp_avg.dtype) * sign  # the state can be wider than the parameter (LDAdam's state_dtype)
        new_exp_avg = exp_avg.copy_(_lerp(exp_avg, grad, one_minus_beta1))
        if not has_squares:
            square = grad * grad
        new_sq = exp_avg_sq.copy_(exp_avg_sq * beta2 + square * one_minus_beta2)
        denom = new_sq.sqrt() / bias_correction2_sqrt + eps
        param.copy_(param * decay + neg_step * (new_exp_avg / denom))


_adamw_kernel = _compiled(_adamw_update)


# Adam-mini with one second moment per block (a row of m viewed a block per row, or the whole tensor) is two graphs,
# cut where the blocks' step factors are final, as CAME's: in one graph inductor recomputed a block's sqrt and two
# divisions for every vector of its elements and divided m by the broadcast denominator element by element (30 ms
# per step on the benchmark's 25M parameters against 18 ms for torch's fused AdamW); the first graph returns each
# block's factor -lr_t / (sqrt(v_hat) + eps) once, and the update multiplies by it.


def _adam_mini_second_moments(grads, exp_avg_sqs, grad_squares, scalars):
    """The blocks' second moments from the block means of g^2 (or the given sums over ranks), and their step
    factors -lr_t / (sqrt(v / bias_correction2) + eps), shaped like the second moments."""
    factors = []
    for i, (grad, exp_avg_sq, given) in enumerate(zip(grads, exp_avg_sqs, grad_squares)):
        _, _, _, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step = scalars[i].unbind()
        square = _block_mean_square(grad, exp_avg_sq) if given is None else given
        new_sq = exp_avg_sq.copy_(exp_avg_sq * beta2 + square * one_minus_beta2)
        factors.append(neg_step / (new_sq.sqrt() / bias_correction2_sqrt + eps))
    return factors


def _adam_mini_apply(params, grads, exp_avgs, factors, scalars):
    for i, (param, grad, exp_avg, factor) in enumerate(zip(params, grads, exp_avgs, factors)):
        sign, decay, one_minus_beta1, _, _, _, _, _ = scalars[i].unbind()
        grad = grad.to(exp_avg.dtype) * sign
        new_exp_avg = exp_avg.copy_(_lerp(exp_avg, grad, one_minus_beta1))
        param.copy_(param * decay + new_exp_avg * factor)


_adam_mini_second_moments_kernel = _compiled(_adam_mini_second_moments)
_adam_mini_apply_kernel = _compiled(_adam_mini_apply)

# On CPU both graphs together still read g twice (the block means are one sweep, the update another: 6 streams
# where the state layout implies 5, 1.36x the roofline on the benchmark set), and inductor's CPU backend does not
# fuse a row's reduction with the row's update (tried: its outer-loop fusion did not trigger on this pattern, and
# forcing the per-row values into buffers made the update a separate pass). A hand-written kernel reduces a block
# and updates it while the block is in cache (``cpu_kernel("adam_mini_step")``).
#
# The CPU kernels (``csrc/<op>.cpp``) are built on first use with torch's C++ extension builder (cached on disk
# under TORCH_EXTENSIONS_DIR; 13-20 s once each here) and registered as torch.ops.adamlab.<op>.
CPU_KERNEL_SOURCES = Path(__file__).parent / "csrc"
CPU_KERNEL_OPTIMIZERS = {"adam_mini_step": "Adam-mini", "came_step": "CAME"}  # the op, and whose step it is
# The vector instructions for the level ATen dispatches its own kernels to on this CPU (SSE2 code was about 1.25x
# slower than AVX-512 on a one-thread profile: compute-bound); the build is named after the level, so a cache
# directory shared between machines never hands one a kernel its CPU cannot run.
VECTOR_FLAGS = {"AVX512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"],
                "AVX2": ["-mavx2", "-mfma"]}


@functools.cache
def cpu_kernel(op: str) -> Callable | None:
    """The built CPU kernel ``torch.ops.adamlab.<op>``, or None (with one warning naming why) when it cannot be
    built here: the compiled graphs then run instead."""
    reason = None
    if shutil.which("ninja") is None:
        reason = "torch builds C++ extensions with ninja, which is not on PATH"
    else:
        capability = torch.backends.cpu.get_cpu_capability()
        try:
            cpp_extension.load(name=f"adamlab_{op}_{capability.lower()}",
                               sources=[str(CPU_KERNEL_SOURCES / f"{op}.cpp")],
                               extra_cflags=["-O3", "-fopenmp", *VECTOR_FLAGS.get(capability, [])],
                               extra_ldflags=["-fopenmp"], is_python_module=False)
        except (RuntimeError, OSError) as error:  # no compiler, a failed build or load
            reason = f"it did not build: {(str(error).strip().splitlines() or [type(error).__name__])[0]}"
    if reason is not None:
        warnings.warn(f"{CPU_KERNEL_OPTIMIZERS[op]}'s CPU kernel unavailable, using the compiled graphs: {reason}",
                      RuntimeWarning, stacklevel=5)
        return None
    return getattr(torch.ops.adamlab, op)


def _cpu_kernel_applies(device: torch.device, tensorlists: list[list[Tensor]]) -> bool:
    """Whether a hand-written CPU kernel can take these tensors: CPU, eager (inside an outer torch.compile the
    graphs trace into it), float32/float64 throughout, contiguous."""
    if torch.device(device).type != "cpu" or torch.compiler.is_compiling():
        return False
    dtype = tensorlists[0][0].dtype
    return dtype in (torch.float32, torch.float64) and all(
        t.dtype == dtype and t.is_contiguous() for column in tensorlists for t in column)


def fused_adamw(
    params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay, maximize, grad_squares=None
) -> None:
    """The fused ``adamlab.optim._adamw`` update (same signature); a None in ``grad_squares`` stands for the
    block means of that gradient's g^2 (Adam-mini), taken inside the compiled update (or, on CPU, the kernel)."""
    rows = [
        [_sign(maximize), 1 - lr * weight_decay, 1 - beta1, beta2, 1 - beta2, math.sqrt(1 - beta2**step), eps,
         -lr / (1 - beta1**step)]
        for step in steps
    ]
    has_squares = grad_squares is not None
    lists = [params, grads, exp_avgs, exp_avg_sqs] + ([grad_squares] if has_squares else [])
    for device_lists, positions, device in _groups(lists):
        group_rows = [rows[i] for i in positions]
        if not has_squares:
            _adamw_kernel(*device_lists, [], _scalars(group_rows, device, device_lists[0][0], device_lists[2][0]),
                          False)
            continue
        # Adam-mini: blocked second moments take the two-graph path above; full-size ones (its plain-Adam
        # blocks) stay in the one-graph update, where a full-size factor would be one more stream to memory
        is_blocked = [v.shape != g.shape for g, v in zip(device_lists[1], device_lists[3])]
        for blocked in (True, False):
            chosen = [i for i, b in enumerate(is_blocked) if b == blocked]
            if not chosen:
                continue
            ps, gs, ms, vs, squares = ([column[i] for i in chosen] for column in device_lists)
            scalars = _scalars([group_rows[i] for i in chosen], device, ps[0], ms[0])
            # DDP's block sums from other ranks take the graphs
            covered = blocked and all(q is None for q in squares) and _cpu_kernel_applies(device, [ps, gs, ms, vs])
            kernel = cpu_kernel("adam_mini_step") if covered else None  # None also where it cannot be built
            if kernel is not None:
                kernel(ps, gs, ms, vs, scalars)
            elif blocked:
                factors = _adam_mini_second_moments_kernel(gs, vs, squares, scalars)
                _adam_mini_apply_kernel(ps, gs, ms, factors, scalars)
            else:
                _adamw_kernel(ps, gs, ms, vs, squares, scalars, True)


# --- HybridAdamSGD --------------------------------------------------------------------------------


def _hybrid_adam_sgd_update(params, grads, exp_avgs, exp_avg_sqs, momentum_bufs, scalars, track_norms: bool):
    norms = []
    for i, (param, grad, exp_avg, exp_avg_sq, buf) in enumerate(
        zip(params, grads, exp_avgs, exp_avg_sqs, momentum_bufs)
    ):
        (sign, neg_lr_wd, one_minus_beta1, beta2_minus_one, one_minus_beta2, momentum_minus_one, grad_weight, eps_t,
         adam, sgd, neg_lr_adam, neg_lr_sgd) = scalars[i].unbind()
        grad = grad * sign
        # x * c as x + (c - 1) * x, the reference's forms
        param = param + param * neg_lr_wd
        new_exp_avg = exp_avg.copy_(_lerp(exp_avg, grad, one_minus_beta1))
        new_sq = exp_avg_sq + exp_avg_sq * beta2_minus_one
        new_sq = exp_avg_sq.copy_(new_sq + grad * grad * one_minus_beta2)
        new_buf = buf + buf * momentum_minus_one
        new_buf = buf.copy_(new_buf + grad * grad_weight)
        ratio = new_exp_avg / (new_sq.sqrt() + eps_t)
        param = param + ratio * neg_lr_adam
        params[i].copy_(param + new_buf * neg_lr_sgd)
        if track_norms:
            norms.append(torch.stack([torch.linalg.vector_norm(ratio) * adam, torch.linalg.vector_norm(new_buf) * sgd]))
    return norms


_hybrid_adam_sgd_kernel = _compiled(_hybrid_adam_sgd_update)


def fused_hybrid_adam_sgd(
    params, grads, exp_avgs, exp_avg_sqs, momentum_bufs, steps, *, lr, beta1, beta2, momentum, eps, weight_decay,
    transition_steps, final_ratio, sgd_dampening, sgd_lr_scale, maximize, branch_norms,
) -> None:
    grad_weight = 1 - momentum if sgd_dampening else 1.0
    rows = []
    for step in steps:  # as hybrid_adam_sgd._step_scalars: a_t, then the bias corrections folded into eps and a_t
        adam_weight = 1 - min(step / transition_steps, 1.0) * (1 - final_ratio)
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        eps_t = eps * bias_correction2_sqrt
        adam = adam_weight * bias_correction2_sqrt / (1 - beta1**step)
        sgd = sgd_lr_scale * (1 - adam_weight)
        rows.append([_sign(maximize), -lr * weight_decay, 1 - beta1, beta2 - 1, 1 - beta2, momentum - 1, grad_weight,
                     eps_t, adam, sgd, -lr * adam, -lr * sgd])
    track = branch_norms is not None
    for device_lists, positions, device in _groups([params, grads, exp_avgs, exp_avg_sqs, momentum_bufs]):
        scalars = _scalars([rows[i] for i in positions], device, device_lists[0][0])
        norms = _hybrid_adam_sgd_kernel(*device_lists, scalars, track)
        if track:
            branch_norms[0].extend(norm[0] for norm in norms)
            branch_norms[1].extend(norm[1] for norm in norms)


# --- CAME -----------------------------------------------------------------------------------------
#
# A factored matrix's step has three points where a reduction over the whole matrix must finish before the next
# part can run: the row/column means of g^2 (the update's factors), the RMS of the update (its clipping) and the
# row/column means of the instability (the step's factors). Compiled as one graph, inductor inlines each small
# factor vector (a lerp and an rsqrt) into the full-size loops that read it, recomputing it for every element, and
# keeps full-size temporaries it then reads back (3.9 ms for one 1376 x 512 matrix against 0.7 ms for torch's fused
# AdamW). So the step is three compiled graphs, cut where the update's factors and the step's factors are final:
# each graph returns its small factor vectors (a graph output is computed once, into memory) and the next reads
# them. (Cutting also at the clipping norm measured slower: the instability was then stored and read back twice.)
# Each graph takes every matrix of the group, so a step is three kernel calls whatever the number of tensors.
# Even so the three graphs stream a matrix 11-13 times (inductor writes a row reduction and a column reduction as
# separate loops) where the data dependencies force 8, so on CPU 2-D matrices take a hand-written kernel with the
# forced four sweeps (``cpu_kernel("came_step")``, the source says which); batched (>= 3-D) ones the graphs.


def _came_row_factor(row: Tensor) -> Tensor:
    return (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)


def _came_clip_divisor(update: Tensor, clip_threshold: Tensor) -> Tensor:
    return torch.clamp(torch.linalg.vector_norm(update) / (math.sqrt(update.numel()) * clip_threshold), min=1.0)


def _came_scalars(scalars: Tensor) -> list[Tensor]:
    return scalars.unbind()  # sign, decay, neg_lr, 1 - beta1, 1 - beta2, 1 - beta3, eps1, eps2, clip_threshold


def _came_second_moments(grads, sq_rows, sq_cols, scalars):
    """The row/column statistics of g^2, and the update's factors: (rsqrt(r / mean(r)) * sign, rsqrt(c))."""
    sign, _, _, _, one_minus_beta2, _, eps1, _, _ = _came_scalars(scalars)
    factors = []
    for grad, sq_row, sq_col in zip(grads, sq_rows, sq_cols):
        square = grad * grad
        new_sq_row = sq_row.copy_(_lerp(sq_row, square.mean(dim=-1) + eps1, one_minus_beta2))
        new_sq_col = sq_col.copy_(_lerp(sq_col, square.mean(dim=-2) + eps1, one_minus_beta2))
        # g's sign enters only through the row factor (g^2 ignores it), as in the reference
        factors.append((_came_row_factor(new_sq_row) * sign, new_sq_col.rsqrt().unsqueeze(-2)))
    return factors


def _came_moments(grads, exp_avgs, res_rows, res_cols, factors, scalars):
    """The clipped update u (recomputed from g and the factors, never stored) into m, then the row/column
    statistics of the instability (u - m)^2, and the step's factors: (rsqrt(R / mean(R)) * -lr, rsqrt(C))."""
    _, _, neg_lr, one_minus_beta1, _, one_minus_beta3, _, eps2, clip_threshold = _came_scalars(scalars)
    step_factors = []
    for grad, exp_avg, res_row, res_col, (row_factor, col_factor) in zip(grads, exp_avgs, res_rows, res_cols, factors):
        update = grad * row_factor * col_factor
        update = update / _came_clip_divisor(update, clip_threshold)
        new_exp_avg = exp_avg.copy_(_lerp(exp_avg, update, one_minus_beta1))
        instability = (update - new_exp_avg).square()
        new_res_row = res_row.copy_(_lerp(res_row, instability.mean(dim=-1) + eps2, one_minus_beta3))
        new_res_col = res_col.copy_(_lerp(res_col, instability.mean(dim=-2) + eps2, one_minus_beta3))
        step_factors.append((_came_row_factor(new_res_row) * neg_lr, new_res_col.rsqrt().unsqueeze(-2)))
    return step_factors


def _came_apply(params, exp_avgs, factors, unfactored, scalars):
    """The factored matrices' parameter update, and the whole step of the unfactored tensors (vectors: small)."""
    sign, decay, neg_lr, one_minus_beta1, one_minus_beta2, _, eps1, _, clip_threshold = _came_scalars(scalars)
    for param, exp_avg, (row_factor, col_factor) in zip(params, exp_avgs, factors):
        param.copy_(param * decay + exp_avg * row_factor * col_factor)
    for param, grad, exp_avg, exp_avg_sq in zip(*unfactored):
        grad = grad * sign
        new_sq = exp_avg_sq.copy_(_lerp(exp_avg_sq, grad * grad + eps1, one_minus_beta2))
        update = new_sq.rsqrt() * grad
        update = update / _came_clip_divisor(update, clip_threshold)
        new_exp_avg = exp_avg.copy_(_lerp(exp_avg, update, one_minus_beta1))
        param.copy_(param * decay + new_exp_avg * neg_lr)


_came_second_moments_kernel = _compiled(_came_second_moments)
# The update u feeds the clip norm, both halves of m's lerp and the instability: past inductor's default of 4 reads
# a value is stored as a full-size temporary and read back, and m's new value was then kept apart and copied in at
# the end. Recomputing u (two multiplies and a divide) in each loop lets inductor update m in place in the loop
# that takes the instability's row means: 1.9-2.0 -> 1.34 ms on a 1376 x 512 matrix, single-threaded, against
# AdamW-fused's 0.79 ms in the same runs.
_came_moments_kernel = _compiled(_came_moments, realize_reads_threshold=8, realize_opcount_threshold=1000)
_came_apply_kernel = _compiled(_came_apply)


def fused_came(
    factored, unfactored, *, lr, beta1, beta2, beta3, eps1, eps2, clip_threshold, weight_decay, maximize
) -> None:
    row = [_sign(maximize), 1 - lr * weight_decay, -lr, 1 - beta1, 1 - beta2, 1 - beta3, eps1, eps2, clip_threshold]
    # Factored and unfactored tensors are grouped together so each (device, dtype) is one set of graphs. The
    # grouping takes lists of equal length, so an unfactored entry fills the four factored-statistics columns with
    # its exp_avg_sq; the split below keeps only the first four columns for it.
    n_factored = len(factored[0])
    tensors = list(zip(*factored)) + [(p, g, m, s, s, s, s) for p, g, m, s in zip(*unfactored)]
    lists = [list(column) for column in zip(*tensors)]
    for device_lists, positions, device in _groups(lists):
        is_factored = [i < n_factored for i in positions]
        params, grads, exp_avgs, sq_rows, sq_cols, res_rows, res_cols = (
            [t for t, f in zip(column, is_factored) if f] for column in device_lists
        )
        unfac = [[t for t, f in zip(column, is_factored) if not f] for column in device_lists[:4]]
        scalars = _scalars(row, device, device_lists[0][0])
        matrices = [params, grads, exp_avgs, sq_rows, sq_cols, res_rows, res_cols]
        plain = [p.dim() == 2 for p in params]
        kernel = cpu_kernel("came_step") if any(plain) and _cpu_kernel_applies(device, matrices) else None
        if kernel is not None:  # (None also where it cannot be built) the 2-D matrices here, the batched below
            kernel(*([t for t, two_d in zip(column, plain) if two_d] for column in matrices), scalars)
            params, grads, exp_avgs, sq_rows, sq_cols, res_rows, res_cols = (
                [t for t, two_d in zip(column, plain) if not two_d] for column in matrices)
        factors, step_factors = [], []
        if params:
            factors = _came_second_moments_kernel(grads, sq_rows, sq_cols, scalars)
            step_factors = _came_moments_kernel(grads, exp_avgs, res_rows, res_cols, factors, scalars)
        if params or unfac[0]:
            _came_apply_kernel(params, exp_avgs, step_factors, unfac, scalars)
