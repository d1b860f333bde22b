"""Yogi: Adam with an additive second-moment update, so v grows or shrinks by at most (1 - beta2) g² per step.

``Yogi`` holds the algorithm and the ``step`` loop; ``_single_tensor_yogi`` is the readable reference update,
``_multi_tensor_yogi`` the same with ``torch._foreach_*`` kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import (
    as_real,
    check_betas,
    check_eps,
    check_lr,
    check_nonnegative,
    document_args,
    evaluate_closure,
    group_by_device_and_dtype,
    params_with_grad,
    real_views,
    use_foreach,
)
from ._fused import check_fused, fused_yogi, use_fused

__all__ = ["Yogi"]


@document_args("maximize", "foreach", "fused")
class Yogi(Optimizer):
    r"""Yogi (Zaheer et al., 2018, "Adaptive Methods for Nonconvex Optimization", NeurIPS). Semantics and
    defaults of ``torch-optimizer`` 0.3.0 (``torch_optimizer.Yogi``): both moments (not only :math:`v`) start
    at ``initial_accumulator``, weight decay is an L2 term added to the gradient, and both moments are
    bias-corrected as in Adam.

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2, \epsilon, \lambda \text{ (weight decay)},
                v_{init} \text{ (initial accumulator)}, \theta_0, f(\theta) \\
            &\textbf{initialize}: m_0 \leftarrow v_{init}, \ v_0 \leftarrow v_{init} \\
            &\textbf{for}\ t = 1, 2, \ldots\ \textbf{do} \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})
                \quad (\text{negated if maximize}) \\
            &\quad g_t \leftarrow g_t + \lambda \theta_{t-1} \\
            &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
            &\quad v_t \leftarrow v_{t-1} - (1 - \beta_2)\, \mathrm{sign}(v_{t-1} - g_t^2)\, g_t^2 \\
            &\quad \theta_t \leftarrow \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}\,
                \frac{m_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon} \\
            &\textbf{return}\ \theta_t
        \end{aligned}

    Unlike Adam's multiplicative :math:`v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2`, Yogi moves :math:`v`
    towards :math:`g_t^2` by an additive :math:`(1 - \beta_2) g_t^2`, so the effective step size grows slowly
    when gradients shrink instead of jumping up. The large default :math:`\epsilon = 10^{-3}` is the paper's.
    State: ``step`` (a Python int), ``exp_avg`` and ``exp_avg_sq``, in the parameter's dtype. Validation differs
    from the reference: ``eps`` must be > 0 (it accepts 0), ``initial_accumulator`` >= 0 (unchecked there), and
    ``lr=0`` is allowed (it requires ``lr > 0``).

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-2).
        betas: :math:`(\beta_1, \beta_2)` for the first and second moments (default (0.9, 0.999)).
        eps: :math:`\epsilon` added to the bias-corrected root of :math:`v` (default 1e-3).
        initial_accumulator: :math:`v_{init}`, the starting value of both moments (default 1e-6).
        weight_decay: L2 penalty :math:`\lambda` added to the gradient (default 0).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-3,
        initial_accumulator: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        check_eps(eps)
        check_nonnegative(initial_accumulator, "initial_accumulator")
        check_nonnegative(weight_decay, "weight_decay")
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            initial_accumulator=initial_accumulator,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p, grad in params_with_grad(group, "Yogi"):
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    fill = group["initial_accumulator"]
                    # filled through the real view: both parts of a complex entry start at the accumulator
                    for key in ("exp_avg", "exp_avg_sq"):
                        state[key] = torch.empty_like(p, memory_format=torch.preserve_format)
                        as_real(state[key]).fill_(fill)
                state["step"] += 1
                params.append(p)
                grads.append(grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            update = _multi_tensor_yogi if use_foreach(group, params) else _single_tensor_yogi
            if use_fused(group, params):
                update = fused_yogi
            beta1, beta2 = group["betas"]
            update(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )
        return loss


def _step_constants(step: int, *, lr: float, beta1: float, beta2: float, eps: float) -> tuple[float, float]:
    """(eps', -step size) with the bias corrections folded in:
    ``m / (sqrt(v / bc2) + eps) * lr / bc1 == m / (sqrt(v) + eps sqrt(bc2)) * lr sqrt(bc2) / bc1``,
    which saves a full pass over ``sqrt(v)``."""
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    return eps * bias_correction2_sqrt, -lr * bias_correction2_sqrt / (1 - beta1**step)


def _single_tensor_yogi(
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
) -> None:
    params, grads, exp_avgs, exp_avg_sqs = real_views(params, grads, exp_avgs, exp_avg_sqs)
    for param, grad, exp_avg, exp_avg_sq, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        if maximize:
            grad = -grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        # sign(v - g^2) * g^2 as (sign(v - g^2) * g) * g: bit-identical (a sign flip is exact) and one temporary.
        signed_grad = torch.addcmul(exp_avg_sq, grad, grad, value=-1).sign_().mul_(grad)
        exp_avg_sq.addcmul_(signed_grad, grad, value=-(1 - beta2))
        eps_t, neg_step_size = _step_constants(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps)
        denom = torch.sqrt(exp_avg_sq, out=signed_grad).add_(eps_t)
        param.addcdiv_(exp_avg, denom, value=neg_step_size)


def _multi_tensor_yogi(
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
) -> None:
    grouped = group_by_device_and_dtype([params, grads, exp_avgs, exp_avg_sqs])
    for (device_params, device_grads, device_exp_avgs, device_exp_avg_sqs), positions in grouped:
        if maximize:
            device_grads = torch._foreach_neg(device_grads)
        if weight_decay != 0:
            if maximize:  # already a private copy
                torch._foreach_add_(device_grads, device_params, alpha=weight_decay)
            else:
                device_grads = torch._foreach_add(device_grads, device_params, alpha=weight_decay)
        torch._foreach_lerp_(device_exp_avgs, device_grads, 1 - beta1)
        signed_grads = torch._foreach_addcmul(device_exp_avg_sqs, device_grads, device_grads, value=-1)
        torch._foreach_sign_(signed_grads)
        torch._foreach_mul_(signed_grads, device_grads)
        torch._foreach_addcmul_(device_exp_avg_sqs, signed_grads, device_grads, value=-(1 - beta2))
        # The denominators reuse the signed-gradient buffers: a fresh full-size list costs a page fault per
        # page on CPU, far more than the extra launches of a per-tensor out= loop.
        denoms = signed_grads
        for exp_avg_sq, denom in zip(device_exp_avg_sqs, denoms):
            torch.sqrt(exp_avg_sq, out=denom)
        constants = [_step_constants(steps[i], lr=lr, beta1=beta1, beta2=beta2, eps=eps) for i in positions]
        torch._foreach_add_(denoms, [eps_t for eps_t, _ in constants])
        torch._foreach_addcdiv_(device_params, device_exp_avgs, denoms, [step_size for _, step_size in constants])
