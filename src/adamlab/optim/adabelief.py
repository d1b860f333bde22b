"""AdaBelief: Adam whose second moment tracks how far the gradient strays from its running mean.

``AdaBelief`` holds the algorithm (its class docstring) and the ``step`` loop; the update itself lives in
``_single_tensor_adabelief`` (the readable reference) and ``_multi_tensor_adabelief`` (``torch._foreach_*``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import (
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
from ._fused import check_fused, fused_adabelief, use_fused

__all__ = ["AdaBelief"]


@document_args("maximize", "foreach", "fused")
class AdaBelief(Optimizer):
    r"""AdaBelief: Adam whose step is scaled by the belief in the observed gradient (Zhuang et al., 2020,
    "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients", NeurIPS,
    arXiv:2010.07468). Semantics and defaults of ``adabelief-pytorch`` 0.2.1.

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2, \epsilon, \lambda \text{ (weight decay)},
                \theta_0, f(\theta) \\
            &\textbf{initialize}: m_0 \leftarrow 0,\ s_0 \leftarrow 0,\ s^{\max}_0 \leftarrow 0,\
                \rho_\infty \leftarrow 2/(1 - \beta_2) - 1 \\
            &\textbf{for}\ t = 1, 2, \ldots\ \textbf{do} \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})
                \quad (\text{negated if maximize}) \\
            &\quad \textbf{if}\ \text{weight\_decouple}:\ \theta_{t-1} \leftarrow \theta_{t-1}(1 - \lambda)
                \ \text{if fixed\_decay, else}\ \theta_{t-1}(1 - \gamma\lambda) \\
            &\quad \textbf{else}:\ g_t \leftarrow g_t + \lambda\theta_{t-1} \\
            &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
            &\quad s_t \leftarrow \beta_2 s_{t-1} + (1 - \beta_2)(g_t - m_t)^2 + \epsilon \\
            &\quad \hat s_t \leftarrow s^{\max}_t \leftarrow \max(s^{\max}_{t-1}, s_t)\ \text{if amsgrad, else}\ s_t \\
            &\quad \textbf{if not}\ \text{rectify}: \\
            &\qquad \theta_t \leftarrow \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}\,
                \frac{m_t}{\sqrt{\hat s_t / (1 - \beta_2^t)} + \epsilon} \\
            &\quad \textbf{else}: \\
            &\qquad \rho_t \leftarrow \rho_\infty - 2t\beta_2^t / (1 - \beta_2^t) \\
            &\qquad \textbf{if}\ \rho_t \geq 5: \
                r_t \leftarrow \sqrt{\frac{(1 - \beta_2^t)(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                    {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}},\
                \theta_t \leftarrow \theta_{t-1} - \frac{\gamma r_t}{1 - \beta_1^t}\,
                \frac{m_t}{\sqrt{s_t} + \epsilon} \\
            &\qquad \textbf{else if}\ \text{degenerated\_to\_sgd}:\
                \theta_t \leftarrow \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}\, m_t \\
            &\qquad \textbf{else}:\ \theta_t \leftarrow \theta_{t-1} \\
            &\textbf{return}\ \theta_t
        \end{aligned}

    Where Adam tracks :math:`g_t^2`, AdaBelief tracks the squared distance of :math:`g_t` from its running
    mean, so it steps far when the gradient agrees with the prediction and cautiously when it does not.
    As in the reference, :math:`\epsilon` is added to :math:`s_t` itself (the stored state includes it)
    and again to the denominator, and the rectified update (RAdam's variance rectification, on by default)
    uses :math:`s_t`, not the AMSGrad maximum, which it still maintains. While :math:`\rho_t < 5` (the
    first ~5 steps for :math:`\beta_2 = 0.999`, every step when :math:`\beta_2 \leq 2/3`) the rectified update
    is bias-corrected SGD with momentum, or no update at all without ``degenerated_to_sgd``; decoupled
    weight decay applies either way. State: ``exp_avg``, ``exp_avg_var`` (and ``max_exp_avg_var`` with
    amsgrad) in the parameter's dtype, and an int ``step``. For float16 parameters the reference computes in
    float32; here the default eps of 1e-16 underflows to 0 in float16 and a coordinate whose gradient never
    changes (zero residual) divides 0 by 0, so keep float32/bfloat16 parameters or use eps >= 1e-7.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)`, decay rates of the gradient mean and of the belief (default (0.9, 0.999)).
        eps: :math:`\epsilon` (default 1e-16; the authors recommend 1e-8 where SGD beats Adam, e.g. CNNs).
        weight_decay: :math:`\lambda` (default 0).
        amsgrad: normalise by the running maximum of :math:`s_t` (default False; unused while rectifying).
        weight_decouple: decay the weights directly, as AdamW, instead of adding an L2 gradient (default True).
        fixed_decay: with ``weight_decouple``, decay by :math:`\lambda` rather than :math:`\gamma\lambda`
            (default False).
        rectify: use the RAdam-style rectified update (default True).
        degenerated_to_sgd: while rectifying and :math:`\rho_t < 5`, take an SGD-with-momentum step instead
            of none (default True).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        rectify: bool = True,
        degenerated_to_sgd: bool = True,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        check_eps(eps)
        check_nonnegative(weight_decay, "weight_decay")
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            weight_decouple=weight_decouple,
            fixed_decay=fixed_decay,
            rectify=rectify,
            degenerated_to_sgd=degenerated_to_sgd,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars, steps = [], [], [], [], [], []
            for p, grad in params_with_grad(group, "AdaBelief"):
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsgrad"]:
                        state["max_exp_avg_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_vars.append(state["exp_avg_var"])
                if group["amsgrad"]:
                    max_exp_avg_vars.append(state["max_exp_avg_var"])
                steps.append(state["step"])
            if not params:
                continue
            update = _multi_tensor_adabelief if use_foreach(group, params) else _single_tensor_adabelief
            if use_fused(group, params):
                update = fused_adabelief
            beta1, beta2 = group["betas"]
            update(
                params,
                grads,
                exp_avgs,
                exp_avg_vars,
                max_exp_avg_vars,
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                amsgrad=group["amsgrad"],
                weight_decouple=group["weight_decouple"],
                fixed_decay=group["fixed_decay"],
                rectify=group["rectify"],
                degenerated_to_sgd=group["degenerated_to_sgd"],
                maximize=group["maximize"],
            )
        return loss


def _rectification(step: int, beta1: float, beta2: float, degenerated_to_sgd: bool) -> tuple[bool, float]:
    """(adaptive, step size before lr) of the rectified update at ``step``: adaptive when rho_t >= 5, else an
    SGD step of the returned size (0.0: no step). The reference's expression, for bit-level agreement."""
    beta2_t = beta2**step
    n_sma_max = 2 / (1 - beta2) - 1
    n_sma = n_sma_max - 2 * step * beta2_t / (1 - beta2_t)
    if n_sma >= 5:
        rect = (1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max / (n_sma_max - 2)
        return True, math.sqrt(rect) / (1 - beta1**step)
    return False, 1.0 / (1 - beta1**step) if degenerated_to_sgd else 0.0


def _decay_factor(lr: float, weight_decay: float, fixed_decay: bool) -> float:
    return 1.0 - weight_decay if fixed_decay else 1.0 - lr * weight_decay


def _single_tensor_adabelief(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_vars: list[Tensor],
    max_exp_avg_vars: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    weight_decouple: bool,
    fixed_decay: bool,
    rectify: bool,
    degenerated_to_sgd: bool,
    maximize: bool,
) -> None:
    params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars = real_views(
        params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars
    )
    for i, (param, grad, exp_avg, exp_avg_var, step) in enumerate(zip(params, grads, exp_avgs, exp_avg_vars, steps)):
        if maximize:
            grad = -grad
        if weight_decouple:
            factor = _decay_factor(lr, weight_decay, fixed_decay)
            if factor != 1.0:
                param.mul_(factor)
        elif weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)

        exp_avg.lerp_(grad, 1 - beta1)
        residual = grad - exp_avg
        exp_avg_var.mul_(beta2).addcmul_(residual, residual, value=1 - beta2).add_(eps)
        if amsgrad:
            torch.maximum(max_exp_avg_vars[i], exp_avg_var, out=max_exp_avg_vars[i])

        # The residual's buffer becomes the denominator: on CPU a second fresh tensor per step (page faults)
        # costs more than the copy.
        if not rectify:
            # m / (sqrt(s / bc2) + eps) * lr / bc1 == m / (sqrt(s) + eps * c) * lr * c / bc1 with c = sqrt(bc2):
            # moving sqrt(bc2) into the scalars saves a pass over the denominator.
            bias_correction1 = 1 - beta1**step
            c = math.sqrt(1 - beta2**step)
            denom = residual.copy_(max_exp_avg_vars[i] if amsgrad else exp_avg_var).sqrt_().add_(eps * c)
            param.addcdiv_(exp_avg, denom, value=-lr * c / bias_correction1)
            continue
        adaptive, step_size = _rectification(step, beta1, beta2, degenerated_to_sgd)
        if adaptive:
            param.addcdiv_(exp_avg, residual.copy_(exp_avg_var).sqrt_().add_(eps), value=-step_size * lr)
        elif step_size > 0:
            # the multi-tensor path has no per-tensor alpha for add_, so both scale first, then add
            param.add_(exp_avg.mul(-step_size * lr))


def _multi_tensor_adabelief(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_vars: list[Tensor],
    max_exp_avg_vars: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    weight_decouple: bool,
    fixed_decay: bool,
    rectify: bool,
    degenerated_to_sgd: bool,
    maximize: bool,
) -> None:
    tensorlists = [params, grads, exp_avgs, exp_avg_vars] + ([max_exp_avg_vars] if amsgrad else [])
    for device_lists, positions in group_by_device_and_dtype(tensorlists):
        device_params, device_grads, device_exp_avgs, device_exp_avg_vars = device_lists[:4]
        device_steps = [steps[i] for i in positions]
        if maximize:
            device_grads = torch._foreach_neg(device_grads)
        if weight_decouple:
            factor = _decay_factor(lr, weight_decay, fixed_decay)
            if factor != 1.0:
                torch._foreach_mul_(device_params, factor)
        elif weight_decay != 0:
            if maximize:  # already a private copy
                torch._foreach_add_(device_grads, device_params, alpha=weight_decay)
            else:
                device_grads = torch._foreach_add(device_grads, device_params, alpha=weight_decay)

        torch._foreach_lerp_(device_exp_avgs, device_grads, 1 - beta1)
        residuals = torch._foreach_sub(device_grads, device_exp_avgs)
        torch._foreach_mul_(device_exp_avg_vars, beta2)
        torch._foreach_addcmul_(device_exp_avg_vars, residuals, residuals, value=1 - beta2)
        torch._foreach_add_(device_exp_avg_vars, eps)
        if amsgrad:
            torch._foreach_maximum_(device_lists[4], device_exp_avg_vars)

        # As in the single-tensor path, the residuals' buffers become the denominators.
        if not rectify:
            # same rewrite as the single-tensor path: sqrt(bc2) folded into the per-parameter scalars
            cs = [math.sqrt(1 - beta2**step) for step in device_steps]
            denoms = residuals
            torch._foreach_copy_(denoms, device_lists[4] if amsgrad else device_exp_avg_vars)
            torch._foreach_sqrt_(denoms)
            torch._foreach_add_(denoms, [eps * c for c in cs])
            step_sizes = [-lr * c / (1 - beta1**step) for c, step in zip(cs, device_steps)]
            torch._foreach_addcdiv_(device_params, device_exp_avgs, denoms, step_sizes)
            continue

        # Params of one group can be at different steps (a param that had no grad for a while), so the
        # rectified and SGD-like updates are split per tensor; usually every tensor lands on one side.
        rectified = [_rectification(step, beta1, beta2, degenerated_to_sgd) for step in device_steps]
        adaptive = [j for j, (is_adaptive, _) in enumerate(rectified) if is_adaptive]
        sgd = [j for j, (is_adaptive, step_size) in enumerate(rectified) if not is_adaptive and step_size > 0]
        if adaptive:
            ps, ms, vs, denoms = _take(adaptive, device_params, device_exp_avgs, device_exp_avg_vars, residuals)
            torch._foreach_copy_(denoms, vs)
            torch._foreach_sqrt_(denoms)
            torch._foreach_add_(denoms, eps)
            torch._foreach_addcdiv_(ps, ms, denoms, [-rectified[j][1] * lr for j in adaptive])
        if sgd:
            ps, ms = _take(sgd, device_params, device_exp_avgs)
            torch._foreach_add_(ps, torch._foreach_mul(ms, [-rectified[j][1] * lr for j in sgd]))


def _take(indices: list[int], *tensorlists: list[Tensor]) -> list[list[Tensor]]:
    """The entries at ``indices`` of each list, without copying when that is all of them."""
    if len(indices) == len(tensorlists[0]):
        return list(tensorlists)
    return [[tensors[j] for j in indices] for tensors in tensorlists]
