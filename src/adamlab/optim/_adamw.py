"""The AdamW elementwise update, written once: LDAdamW's full-rank groups and Adam-mini both end in it.

The second moment may be smaller than the parameter (Adam-mini keeps one per block, shaped to broadcast over the
parameter viewed as one row per block); the caller then passes ``grad_squares``, the block means of g², to fold
into it instead of the elementwise g². Step counts are per parameter: the bias corrections are Python floats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import group_by_device_and_dtype, real_views

__all__ = ["multi_tensor_adamw", "single_tensor_adamw"]


def single_tensor_adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    grad_squares: list[Tensor] | None = None,
) -> None:
    r"""For each parameter, with :math:`t` its step (this one included):

    .. math::
        \theta \leftarrow \theta (1 - \gamma\lambda), \quad m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        \theta \leftarrow \theta - \frac{\gamma}{1 - \beta_1^t} \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon}

    Gradients are cast to the state's dtype first (the state may be wider than a bf16 parameter); complex
    parameters step as real pairs."""
    squares = grad_squares if grad_squares is not None else [None] * len(params)
    grads = [grad.to(exp_avg.dtype) for grad, exp_avg in zip(grads, exp_avgs)]
    params, grads, exp_avgs, exp_avg_sqs = real_views(params, grads, exp_avgs, exp_avg_sqs)
    for param, grad, exp_avg, exp_avg_sq, square, step in zip(params, grads, exp_avgs, exp_avg_sqs, squares, steps):
        if maximize:
            grad = -grad
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        if square is None:
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        else:
            exp_avg_sq.mul_(beta2).add_(square, alpha=1 - beta2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))


def multi_tensor_adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    grad_squares: list[Tensor] | None = None,
) -> None:
    """``single_tensor_adamw`` with ``torch._foreach_*`` kernels, one call per device and dtype (equal to 1e-12 in
    float64)."""
    lists = [params, grads, exp_avgs, exp_avg_sqs] + ([grad_squares] if grad_squares is not None else [])
    for device_lists, positions in group_by_device_and_dtype(lists):
        device_params, device_grads, device_exp_avgs, device_exp_avg_sqs = device_lists[:4]
        device_steps = [steps[i] for i in positions]
        # foreach kernels take one dtype per call: gradients join the state's (wider with LDAdamW's state_dtype)
        device_grads = [g.to(m.dtype) for g, m in zip(device_grads, device_exp_avgs)]
        if maximize:
            device_grads = torch._foreach_neg(device_grads)
        if weight_decay != 0:
            torch._foreach_mul_(device_params, 1 - lr * weight_decay)
        torch._foreach_lerp_(device_exp_avgs, device_grads, 1 - beta1)
        torch._foreach_mul_(device_exp_avg_sqs, beta2)
        if grad_squares is None:
            torch._foreach_addcmul_(device_exp_avg_sqs, device_grads, device_grads, value=1 - beta2)
        else:
            torch._foreach_add_(device_exp_avg_sqs, device_lists[4], alpha=1 - beta2)
        denoms = torch._foreach_sqrt(device_exp_avg_sqs)
        torch._foreach_div_(denoms, [math.sqrt(1 - beta2**step) for step in device_steps])
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_(device_params, device_exp_avgs, denoms, [-lr / (1 - beta1**s) for s in device_steps])
