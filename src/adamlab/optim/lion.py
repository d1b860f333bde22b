"""Lion: the sign of an interpolated momentum as the update (every coordinate moves by exactly lr).

``Lion`` holds the algorithm and the ``step`` loop; ``_single_tensor_lion`` is the readable reference update,
``_multi_tensor_lion`` the same with ``torch._foreach_*`` kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import (
    check_betas,
    check_lr,
    check_nonnegative,
    document_args,
    evaluate_closure,
    group_by_device_and_dtype,
    params_with_grad,
    real_views,
    use_foreach,
)
from ._fused import check_fused, fused_lion, use_fused

__all__ = ["Lion"]


@document_args("maximize", "foreach", "fused")
class Lion(Optimizer):
    r"""Lion: EvoLved Sign Momentum (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms",
    arXiv:2302.06675). Semantics of ``lion-pytorch`` (``decoupled_weight_decay=False``).

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2, \lambda \text{ (weight decay)},
                \theta_0, f(\theta) \\
            &\textbf{initialize}: m_0 \leftarrow 0 \\
            &\textbf{for}\ t = 1, 2, \ldots\ \textbf{do} \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})
                \quad (\text{negated if maximize}) \\
            &\quad \theta_t \leftarrow \theta_{t-1} (1 - \gamma\lambda) \\
            &\quad c_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
            &\quad \theta_t \leftarrow \theta_t - \gamma\, \mathrm{sign}(c_t) \\
            &\quad m_t \leftarrow \beta_2 m_{t-1} + (1 - \beta_2) g_t \\
            &\textbf{return}\ \theta_t
        \end{aligned}

    Every coordinate moves by exactly ``lr`` (times the decay), so Lion wants an lr 3-10x smaller than
    AdamW's and a weight decay 3-10x larger for the same effective regularisation (the paper's advice).
    State: one momentum buffer per parameter, in the parameter's dtype.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-4).
        betas: :math:`(\beta_1, \beta_2)`, interpolation for the update and for the momentum (default (0.9, 0.99)).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        check_nonnegative(weight_decay, "weight_decay")
        check_fused(fused, foreach)
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize, foreach=foreach, fused=fused)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params, grads, exp_avgs = [], [], []
            for p, grad in params_with_grad(group, "Lion"):
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(grad)
                exp_avgs.append(state["exp_avg"])
            if not params:
                continue
            update = _multi_tensor_lion if use_foreach(group, params) else _single_tensor_lion
            if use_fused(group, params):
                update = fused_lion
            beta1, beta2 = group["betas"]
            update(
                params,
                grads,
                exp_avgs,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )
        return loss


def _single_tensor_lion(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    params, grads, exp_avgs = real_views(params, grads, exp_avgs)
    for param, grad, exp_avg in zip(params, grads, exp_avgs):
        if maximize:
            grad = -grad
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        update = exp_avg.mul(beta1).add_(grad, alpha=1 - beta1).sign_()
        param.add_(update, alpha=-lr)
        exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)


def _multi_tensor_lion(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    for (device_params, device_grads, device_exp_avgs), _ in group_by_device_and_dtype([params, grads, exp_avgs]):
        if maximize:
            device_grads = torch._foreach_neg(device_grads)
        if weight_decay != 0:
            torch._foreach_mul_(device_params, 1 - lr * weight_decay)
        updates = torch._foreach_mul(device_exp_avgs, beta1)
        torch._foreach_add_(updates, device_grads, alpha=1 - beta1)
        torch._foreach_sign_(updates)
        torch._foreach_add_(device_params, updates, alpha=-lr)
        torch._foreach_mul_(device_exp_avgs, beta2)
        torch._foreach_add_(device_exp_avgs, device_grads, alpha=1 - beta2)
