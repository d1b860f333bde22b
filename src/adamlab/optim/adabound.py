"""AdaBound and AMSBound: Adam whose per-coordinate step size is clipped into bounds closing in on SGD.

``AdaBound`` holds the algorithm and the ``step`` loop; ``_single_tensor_adabound`` is the readable reference
update, ``_multi_tensor_adabound`` the same with ``torch._foreach_*`` kernels.
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
from ._fused import check_fused, fused_adabound, use_fused

__all__ = ["AdaBound"]


@document_args("maximize", "foreach", "fused")
class AdaBound(Optimizer):
    r"""AdaBound: Adam whose per-coordinate step size is clipped to bounds that close in on an SGD learning
    rate (Luo et al., 2019, "Adaptive Gradient Methods with Dynamic Bound of Learning Rate", ICLR,
    arXiv:1902.09843). Semantics and defaults of ``adabound`` 0.0.5; ``amsbound=True`` is AMSBound.

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \gamma_0 \text{ (base lr)}, \alpha^* \text{ (final\_lr)},
                \beta_1, \beta_2, \epsilon, \lambda \text{ (weight decay)}, \kappa \text{ (gamma)},
                \theta_0, f(\theta) \\
            &\textbf{initialize}: m_0 \leftarrow 0,\ v_0 \leftarrow 0,\ v^{\max}_0 \leftarrow 0 \\
            &\textbf{for}\ t = 1, 2, \ldots\ \textbf{do} \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda\theta_{t-1}
                \quad (\text{gradient negated if maximize}) \\
            &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
            &\quad v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
            &\quad \hat v_t \leftarrow v^{\max}_t \leftarrow \max(v^{\max}_{t-1}, v_t)\ \text{if amsbound, else}\ v_t \\
            &\quad \alpha_t \leftarrow \alpha^* \gamma / \gamma_0 \\
            &\quad \eta_l \leftarrow \alpha_t \left(1 - \frac{1}{\kappa t + 1}\right),\quad
                \eta_u \leftarrow \alpha_t \left(1 + \frac{1}{\kappa t}\right) \\
            &\quad \eta_t \leftarrow \mathrm{clip}\left(
                \frac{\gamma \sqrt{1 - \beta_2^t}}{(1 - \beta_1^t)(\sqrt{\hat v_t} + \epsilon)},\
                \eta_l,\ \eta_u\right) \\
            &\quad \theta_t \leftarrow \theta_{t-1} - \eta_t\, m_t \\
            &\textbf{return}\ \theta_t
        \end{aligned}

    Early on the bounds are :math:`(0, \infty)` in effect and the update is Adam's; as :math:`t` grows both
    tend to :math:`\alpha_t`, so the update becomes SGD with momentum at learning rate :math:`\alpha_t`
    (after about :math:`1/\kappa` steps the bounds are within a factor 2 of it). Weight decay is an L2 term
    added to the gradient, as in the reference.

    **The final lr follows the lr.** Each param group stores ``base_lr``, its ``lr`` when it joined the
    optimizer, and the bounds use :math:`\alpha^* \gamma / \gamma_0`: an LR scheduler (or any change to
    ``group["lr"]``) scales the SGD learning rate the bounds converge to by the same factor, so a decayed
    ``lr`` also decays the final lr. ``base_lr`` lives in the param group, so it is saved by ``state_dict()``
    and restored by ``load_state_dict()``: a resumed run keeps scaling against the original lr rather than
    the lr the scheduler had reached. To change the target itself, set ``group["final_lr"]``. A group
    created with ``lr=0`` has no base to scale against: it stays frozen while its lr is 0 and uses
    ``final_lr`` unscaled once it is raised. State: ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``
    with amsbound) in the parameter's dtype, and an int ``step``.

    Args:
        params: parameters or param groups.
        lr: Adam learning rate :math:`\gamma` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)`, decay rates of the gradient's first and second moments
            (default (0.9, 0.999)).
        final_lr: SGD learning rate :math:`\alpha^*` the bounds converge to, at the base lr (default 0.1).
        gamma: convergence speed :math:`\kappa` of the bounds, in (0, 1) (default 1e-3).
        eps: :math:`\epsilon` (default 1e-8).
        weight_decay: L2 penalty :math:`\lambda` (default 0).
        amsbound: normalise by the running maximum of :math:`v_t` (AMSBound; default False).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsbound: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        check_nonnegative(final_lr, "final_lr")
        # gamma = 0 would make the upper bound 1/0 (the reference divides by zero on its first step)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 < gamma < 1.0:
            raise ValueError(f"Invalid gamma: {gamma!r} (expected a float in (0, 1))")
        check_eps(eps)
        check_nonnegative(weight_decay, "weight_decay")
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            betas=betas,
            final_lr=final_lr,
            gamma=gamma,
            eps=eps,
            weight_decay=weight_decay,
            amsbound=amsbound,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its ``base_lr`` (see the class notes) defaults to its lr now."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("base_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], [], [], []
            for p, grad in params_with_grad(group, "AdaBound"):
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsbound"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                if group["amsbound"]:
                    max_exp_avg_sqs.append(state["max_exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            lr, base_lr, final_lr = group["lr"], group["base_lr"], group["final_lr"]
            # final_lr follows the lr's moves since the group joined; a group that joined at lr 0 has no base
            final_lr = final_lr * lr / base_lr if base_lr > 0 else (final_lr if lr > 0 else 0.0)
            update = _multi_tensor_adabound if use_foreach(group, params) else _single_tensor_adabound
            if use_fused(group, params):
                update = fused_adabound
            beta1, beta2 = group["betas"]
            update(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs,
                steps,
                lr=lr,
                final_lr=final_lr,
                beta1=beta1,
                beta2=beta2,
                gamma=group["gamma"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                amsbound=group["amsbound"],
                maximize=group["maximize"],
            )
        return loss


def _denominator_bounds(
    step: int, *, lr: float, final_lr: float, beta1: float, beta2: float, gamma: float
) -> tuple[float, float, float]:
    """(step size, lowest and highest allowed denominator) at ``step``.

    clip(step_size / d, lower, upper) == step_size / clip(d, step_size / upper, step_size / lower) for
    positive values, so the bounds move onto the denominator and the update is a single addcdiv instead
    of a reciprocal, a scaling and a multiply. Needs final_lr > 0 (else the update is zero: not called)."""
    step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    lower = final_lr * (1 - 1 / (gamma * step + 1))
    upper = final_lr * (1 + 1 / (gamma * step))
    # lower rounds to 0 when gamma * step < ~1e-16: no bound from below
    return step_size, step_size / upper, step_size / lower if lower > 0 else math.inf


def _single_tensor_adabound(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    final_lr: float,
    beta1: float,
    beta2: float,
    gamma: float,
    eps: float,
    weight_decay: float,
    amsbound: bool,
    maximize: bool,
) -> None:
    params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs = real_views(
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs
    )
    for i, (param, grad, exp_avg, exp_avg_sq, step) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, steps)):
        if maximize:
            grad = -grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if amsbound:
            torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
        if final_lr == 0:  # both bounds are 0 (final_lr 0, or the group's lr is 0): the step is 0
            continue
        step_size, denom_min, denom_max = _denominator_bounds(
            step, lr=lr, final_lr=final_lr, beta1=beta1, beta2=beta2, gamma=gamma
        )
        denom = (max_exp_avg_sqs[i] if amsbound else exp_avg_sq).sqrt().add_(eps)
        denom.clamp_(min=denom_min, max=denom_max)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _multi_tensor_adabound(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    final_lr: float,
    beta1: float,
    beta2: float,
    gamma: float,
    eps: float,
    weight_decay: float,
    amsbound: bool,
    maximize: bool,
) -> None:
    tensorlists = [params, grads, exp_avgs, exp_avg_sqs] + ([max_exp_avg_sqs] if amsbound else [])
    for device_lists, positions in group_by_device_and_dtype(tensorlists):
        device_params, device_grads, device_exp_avgs, device_exp_avg_sqs = device_lists[:4]
        if maximize:
            device_grads = torch._foreach_neg(device_grads)
        if weight_decay != 0:
            if maximize:  # already a private copy
                torch._foreach_add_(device_grads, device_params, alpha=weight_decay)
            else:
                device_grads = torch._foreach_add(device_grads, device_params, alpha=weight_decay)
        torch._foreach_lerp_(device_exp_avgs, device_grads, 1 - beta1)
        torch._foreach_mul_(device_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(device_exp_avg_sqs, device_grads, device_grads, value=1 - beta2)
        if amsbound:
            torch._foreach_maximum_(device_lists[4], device_exp_avg_sqs)
        if final_lr == 0:  # both bounds are 0: the step is 0
            continue
        bounds = [
            _denominator_bounds(steps[i], lr=lr, final_lr=final_lr, beta1=beta1, beta2=beta2, gamma=gamma)
            for i in positions
        ]
        denoms = torch._foreach_sqrt(device_lists[4] if amsbound else device_exp_avg_sqs)
        torch._foreach_add_(denoms, eps)
        torch._foreach_clamp_min_(denoms, [denom_min for _, denom_min, _ in bounds])
        torch._foreach_clamp_max_(denoms, [denom_max for _, _, denom_max in bounds])
        torch._foreach_addcdiv_(device_params, device_exp_avgs, denoms, [-step_size for step_size, _, _ in bounds])
