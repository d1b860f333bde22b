"""Pieces every adamlab optimizer shares: hyperparameter checks, doc fragments, gradient collection, complex
parameters as real pairs, foreach grouping.

Each optimizer module keeps its own ``step`` readable top to bottom and calls these helpers; the math
lives in two functions per module, ``_single_tensor_<name>`` (the reference loop) and
``_multi_tensor_<name>`` (the same update with ``torch._foreach_*`` kernels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

# --- hyperparameter checks: every constructor fails before any work starts ------------------------


def check_lr(lr: float) -> None:
    if isinstance(lr, Tensor):
        raise ValueError("lr must be a Python float, not a Tensor")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"Invalid learning rate: {lr!r} (expected a finite float >= 0)")


def check_eps(eps: float, *, name: str = "eps", allow_zero: bool = False) -> None:
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0 or (eps == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Invalid {name}: {eps!r} (expected a finite float {bound})")


def check_beta(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid {name}: {value!r} (expected a float in [0, 1))")


def check_betas(betas: Sequence[float], count: int = 2) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != count:
        raise ValueError(f"Invalid betas: {betas!r} (expected a tuple of {count} floats in [0, 1))")
    for i, beta in enumerate(betas):
        check_beta(beta, f"beta at index {i}")


def check_nonnegative(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid {name}: {value!r} (expected a finite float >= 0)")


def check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r} (expected an int >= 1)")


# --- doc fragments: the argument lines every optimizer documents alike, written once (torch.optim does the same) --

ARG_DOCS = {
    "maximize": "maximize the objective instead of minimizing it.",
    "foreach": "use the multi-tensor path (``None`` = whenever the tensors allow it).",
    "fused": "compile the update into one kernel per device and dtype (default off); where no C++ compiler (CPU) "
    "or Triton (CUDA) is available it warns once and uses the foreach path.",
}


def document_args(*names: str, **overrides: str) -> Callable[[type], type]:
    """Append the shared ``Args`` lines ``names`` (``overrides`` replace a shared line's text) to a class docstring,
    whose ``Args:`` section must come last."""

    def decorate(cls: type) -> type:
        lines = [f"        {name}: {overrides.get(name, ARG_DOCS[name])}" for name in names]
        cls.__doc__ = cls.__doc__.rstrip() + "\n" + "\n".join(lines) + "\n"
        return cls

    return decorate


# --- complex parameters -------------------------------------------------------------------------------------------


def as_real(tensor: Tensor) -> Tensor:
    """A complex tensor as its real pairs (a view with a trailing dimension of 2), as torch.optim steps complex
    parameters; a real tensor as is. Elementwise updates on the view treat re and im as two real coordinates."""
    return torch.view_as_real(tensor) if torch.is_complex(tensor) else tensor


def real_views(*tensorlists: list[Tensor]) -> list[list[Tensor]]:
    """Each list with its complex tensors as real views: the first line of every single-tensor update."""
    return [[as_real(t) for t in tensors] for tensors in tensorlists]


def reject_complex(params: Iterable[Tensor], optimizer_name: str, reason: str) -> None:
    """For algorithms whose update depends on a tensor's shape (factored or blocked statistics, projections):
    a complex parameter has no agreed meaning there, so it fails when its group is added, not with wrong numbers."""
    if any(torch.is_complex(p) for p in params):
        raise ValueError(f"{optimizer_name} does not support complex parameters: {reason}; train the real view "
                         "(torch.view_as_real) to treat real and imaginary parts as separate real coordinates")


# --- the step skeleton ------------------------------------------------------------------------------


def evaluate_closure(closure: Callable[[], float] | None) -> float | None:
    """Re-evaluate the model under grad mode, as torch.optim does inside ``step(closure)``."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def params_with_grad(group: dict, optimizer_name: str) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (param, grad) for the params of ``group`` that have a gradient; params without one are skipped
    and their state (step counter included) does not advance."""
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{optimizer_name} does not support sparse gradients")
        yield p, p.grad


def use_foreach(group: dict, params: Sequence[Tensor]) -> bool:
    """``foreach=None`` (the default) means on whenever the tensors allow it: plain dense tensors."""
    if group.get("foreach") is False or torch.jit.is_scripting():
        return False
    return all(type(p) in (Tensor, torch.nn.Parameter) and not p.is_sparse for p in params)


# On CPU, one foreach call sweeps every tensor before the next op starts, so an update of ~10 ops streams all
# parameters and states through DRAM ~10 times. Splitting the lists into runs of about this many elements (1 MiB of
# fp32 per list) keeps a run's working set in cache across all its ops: 0.6-0.8x the step time of unsplit lists in
# benchmarks/optim_step.py. On GPUs one launch per op is what matters, so their lists stay whole.
CPU_RUN_ELEMENTS = 1 << 18


def group_by_device_and_dtype(tensorlists: list[list[Tensor]]) -> Iterator[tuple[list[list[Tensor]], list[int]]]:
    """Split parallel lists of tensors so each foreach call sees one device and dtype, as torch.optim does, and
    on CPU also into cache-sized runs of whole tensors.

    Yields the split lists and the original positions of their entries, so per-parameter Python values
    (step counters, bias corrections) can be picked out for each split. Complex tensors come out as their real
    views, as torch.optim's foreach paths take them right after grouping."""
    grouped = Optimizer._group_tensors_by_device_and_dtype(tensorlists, with_indices=True)
    for (device, _), (split_lists, positions) in grouped.items():
        split_lists, positions = real_views(*split_lists), list(positions)
        if device is None or device.type != "cpu":
            yield split_lists, positions
            continue
        start, elements = 0, 0
        for end, tensor in enumerate(split_lists[0], start=1):
            elements += tensor.numel()
            if elements >= CPU_RUN_ELEMENTS or end == len(positions):
                yield [t[start:end] for t in split_lists], positions[start:end]
                start, elements = end, 0


def step_without_global_hooks(optimizer: Optimizer, closure: Callable[[], float] | None) -> float | None:
    """``optimizer.step(closure)`` with the optimizer's own step hooks but not the global ones, for wrappers that step
    an inner optimizer (Lookahead, Switch): the wrapper's own step fires the global hooks, once. torch has no
    option for this, so its step wrapper's hook loop is repeated here; an ``optimizer.step`` replaced on the
    instance (not the class) is bypassed."""
    step = getattr(type(optimizer).step, "__wrapped__", None)
    if step is None:  # a class whose step torch has not wrapped with hooks
        return optimizer.step(closure)
    args, kwargs = (optimizer, closure), {}
    for pre_hook in list(optimizer._optimizer_step_pre_hooks.values()):
        result = pre_hook(optimizer, args, kwargs)
        if result is not None:
            args, kwargs = result
    loss = step(*args, **kwargs)
    for post_hook in list(optimizer._optimizer_step_post_hooks.values()):
        post_hook(optimizer, args, kwargs)
    return loss
