"""CAME: Adafactor-style factored second moments, with a confidence (instability) statistic that scales the
momentum.

``CAME`` holds the algorithm and the ``step`` loop; ``_update_factored`` is the per-matrix factored step, shared by
``_single_tensor_came`` (the readable reference) and ``_multi_tensor_came``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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
    reject_complex,
    use_foreach,
)
from ._fused import check_fused, fused_came, use_fused

__all__ = ["CAME"]


@document_args("maximize", "foreach", "fused")
class CAME(Optimizer):
    r"""CAME: Confidence-guided Adaptive Memory Efficient optimization (Luo et al., 2023, ACL, "CAME:
    Confidence-guided Adaptive Memory Efficient Optimization", arXiv:2307.02047). Semantics of
    ``came-pytorch`` 0.1.3 (``came_pytorch.CAME``), the authors' implementation.

    For a parameter with at least two dims, shaped :math:`(\ldots, n, m)`, the second moment and the
    instability are kept as Adafactor-style row and column statistics over the last two dims (leading dims are
    a batch of independent matrices); :math:`\mathrm{mean}_r` / :math:`\mathrm{mean}_c` average over the
    last / second-to-last dim.

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2, \beta_3, \epsilon_1, \epsilon_2,
                d \text{ (clip threshold)}, \lambda \text{ (weight decay)}, \theta_0, f(\theta) \\
            &\textbf{initialize}: m_0, r_0, c_0, R_0, C_0 \leftarrow 0 \\
            &\textbf{for}\ t = 1, 2, \ldots\ \textbf{do} \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})
                \quad (\text{negated if maximize}) \\
            &\quad r_t \leftarrow \beta_2 r_{t-1} + (1 - \beta_2)\,(\mathrm{mean}_r(g_t^2) + \epsilon_1) \\
            &\quad c_t \leftarrow \beta_2 c_{t-1} + (1 - \beta_2)\,(\mathrm{mean}_c(g_t^2) + \epsilon_1) \\
            &\quad u_t \leftarrow g_t \,/\, \sqrt{r_t c_t^\top / \mathrm{mean}(r_t)} \\
            &\quad \hat u_t \leftarrow u_t \,/\, \max(1, \mathrm{RMS}(u_t) / d) \\
            &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, \hat u_t \\
            &\quad U_t \leftarrow (\hat u_t - m_t)^2 \\
            &\quad R_t \leftarrow \beta_3 R_{t-1} + (1 - \beta_3)\,(\mathrm{mean}_r(U_t) + \epsilon_2) \\
            &\quad C_t \leftarrow \beta_3 C_{t-1} + (1 - \beta_3)\,(\mathrm{mean}_c(U_t) + \epsilon_2) \\
            &\quad \theta_t \leftarrow \theta_{t-1} (1 - \gamma\lambda)
                - \gamma\, m_t \,/\, \sqrt{R_t C_t^\top / \mathrm{mean}(R_t)} \\
            &\textbf{return}\ \theta_t
        \end{aligned}

    Parameters with fewer than two dims keep a full :math:`v_t = \beta_2 v_{t-1} + (1-\beta_2)(g_t^2 +
    \epsilon_1)`, use :math:`u_t = g_t / \sqrt{v_t}`, and (as in the reference) skip the confidence step:
    :math:`\theta_t = \theta_{t-1}(1 - \gamma\lambda) - \gamma m_t`. There is no bias correction.

    State: ``step`` (a Python int) and ``exp_avg`` (full size); ``exp_avg_sq_row`` / ``exp_avg_sq_col`` and
    ``exp_avg_res_row`` / ``exp_avg_res_col`` (shapes ``(..., n)`` and ``(..., m)``) for factored params,
    ``exp_avg_sq`` (full size) otherwise; all in the parameter's dtype. Differences from the reference: its
    ``RMS`` state entry (computed, never used) is not kept; bf16/fp16 params keep bf16/fp16 state (the
    reference computes and stores it in fp32); a zero-size parameter only advances ``step`` (the reference
    fills the statistics over its non-empty dim with NaN); ``lr`` defaults to the reference README's 2e-4
    (the reference's ``lr=None`` cannot run); validation is stricter (betas in [0, 1), both eps and
    ``clip_threshold`` > 0, ``weight_decay`` >= 0) except that ``lr=0`` is allowed.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 2e-4).
        eps: :math:`(\epsilon_1, \epsilon_2)` added to the squared gradient and to the instability
            (default (1e-30, 1e-16)).
        clip_threshold: :math:`d`, the largest RMS of the normalised update :math:`\hat u_t` (default 1.0).
        betas: :math:`(\beta_1, \beta_2, \beta_3)` for the update, the squared gradient and the instability
            (default (0.9, 0.999, 0.9999)).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 2e-4,
        eps: tuple[float, float] = (1e-30, 1e-16),
        clip_threshold: float = 1.0,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise ValueError(f"Invalid eps: {eps!r} (expected a pair (eps1, eps2) of finite floats > 0)")
        check_eps(eps[0], name="eps1")
        check_eps(eps[1], name="eps2")
        check_eps(clip_threshold, name="clip_threshold")
        check_betas(betas, count=3)
        check_nonnegative(weight_decay, "weight_decay")
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            eps=eps,
            clip_threshold=clip_threshold,
            betas=betas,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            reject_complex(self.param_groups[-1]["params"], "CAME",
                           "its row and column statistics are defined for real matrices")
        except ValueError:
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            # Factored (>= 2-D) and unfactored params keep different state, so they travel in separate lists.
            factored = [], [], [], [], [], [], []  # params, grads, exp_avgs, sq rows, sq cols, res rows, res cols
            unfactored = [], [], [], []  # params, grads, exp_avgs, exp_avg_sqs
            for p, grad in params_with_grad(group, "CAME"):
                state = self.state[p]
                if not state:
                    _init_state(state, p)
                state["step"] += 1
                if p.numel() == 0:  # nothing to update; the reductions over an empty dim would only make NaN
                    continue
                if p.dim() >= 2:
                    lists, tensors = factored, (p, grad, *(state[key] for key in _FACTORED_KEYS))
                else:
                    lists, tensors = unfactored, (p, grad, state["exp_avg"], state["exp_avg_sq"])
                for tensor_list, tensor in zip(lists, tensors):
                    tensor_list.append(tensor)
            if not factored[0] and not unfactored[0]:
                continue
            update = _multi_tensor_came if use_foreach(group, factored[0] + unfactored[0]) else _single_tensor_came
            if use_fused(group, factored[0] + unfactored[0]):
                update = fused_came
            beta1, beta2, beta3 = group["betas"]
            eps1, eps2 = group["eps"]
            update(
                factored,
                unfactored,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                beta3=beta3,
                eps1=eps1,
                eps2=eps2,
                clip_threshold=group["clip_threshold"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )
        return loss


_FACTORED_KEYS = ("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_res_row", "exp_avg_res_col")


def _init_state(state: dict, p: Tensor) -> None:
    state["step"] = 0
    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    if p.dim() >= 2:
        row_shape, col_shape = p.shape[:-1], p.shape[:-2] + p.shape[-1:]
        state["exp_avg_sq_row"] = p.new_zeros(row_shape)
        state["exp_avg_sq_col"] = p.new_zeros(col_shape)
        state["exp_avg_res_row"] = p.new_zeros(row_shape)
        state["exp_avg_res_col"] = p.new_zeros(col_shape)
    else:
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def _row_factor(row: Tensor) -> Tensor:
    """``rsqrt(row / mean(row))`` shaped ``(..., n, 1)``: with ``rsqrt(col)`` it is the reference's
    ``rsqrt(r c^T / mean(r))`` without building the outer product."""
    return (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)


def _clip_divisor(update: Tensor, clip_threshold: float) -> Tensor:
    """``max(1, RMS(update) / d)`` as a 0-dim tensor (no host sync)."""
    return torch.linalg.vector_norm(update).div_(math.sqrt(update.numel()) * clip_threshold).clamp_(min=1.0)


def _update_factored(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    sq_rows: list[Tensor],
    sq_cols: list[Tensor],
    res_rows: list[Tensor],
    res_cols: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    eps1: float,
    eps2: float,
    clip_threshold: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The CAME step for >= 2-D params, shared by both paths. The row/column reductions have no foreach
    kernels, so each matrix is finished start to finish while its tensors are still in cache (on CPU this
    beat sweeping the list one foreach phase at a time by 1.2-1.5x). All full-size temporaries (g^2, then the
    update, then the instability, then the scaled step) live in one workspace per device and dtype, sized for
    the largest param and reused: fresh memory costs a page fault per page on CPU."""
    sizes: dict[tuple[torch.device, torch.dtype], int] = {}
    for grad in grads:
        key = (grad.device, grad.dtype)
        sizes[key] = max(sizes.get(key, 0), grad.numel())
    workspaces = {key: torch.empty(size, device=key[0], dtype=key[1]) for key, size in sizes.items()}
    for param, grad, exp_avg, sq_row, sq_col, res_row, res_col in zip(
        params, grads, exp_avgs, sq_rows, sq_cols, res_rows, res_cols
    ):
        scratch = workspaces[grad.device, grad.dtype][: grad.numel()].view(grad.shape)
        torch.mul(grad, grad, out=scratch)
        # mean(g^2) + eps1 == mean(g^2 + eps1), without a full-size pass to add eps1.
        sq_row.lerp_(scratch.mean(dim=-1).add_(eps1), 1 - beta2)
        sq_col.lerp_(scratch.mean(dim=-2).add_(eps1), 1 - beta2)
        row_factor = _row_factor(sq_row)
        if maximize:  # g enters only here (g^2 ignores its sign), and negating the small factor is exact
            row_factor.neg_()
        update = torch.mul(grad, row_factor, out=scratch).mul_(sq_col.rsqrt().unsqueeze(-2))
        update.div_(_clip_divisor(update, clip_threshold))
        exp_avg.lerp_(update, 1 - beta1)
        instability = update.sub_(exp_avg).square_()
        res_row.lerp_(instability.mean(dim=-1).add_(eps2), 1 - beta3)
        res_col.lerp_(instability.mean(dim=-2).add_(eps2), 1 - beta3)
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        # lr rides on the small row factor, so the full-size product is formed once.
        scaled = torch.mul(exp_avg, _row_factor(res_row).mul_(-lr), out=scratch)
        param.addcmul_(scaled, res_col.rsqrt().unsqueeze(-2))


def _single_tensor_came(
    factored: Sequence[list[Tensor]],
    unfactored: Sequence[list[Tensor]],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    eps1: float,
    eps2: float,
    clip_threshold: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    _update_factored(
        *factored,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        eps1=eps1,
        eps2=eps2,
        clip_threshold=clip_threshold,
        weight_decay=weight_decay,
        maximize=maximize,
    )
    for param, grad, exp_avg, exp_avg_sq in zip(*unfactored):
        if maximize:
            grad = -grad
        exp_avg_sq.lerp_(torch.mul(grad, grad).add_(eps1), 1 - beta2)
        update = exp_avg_sq.rsqrt().mul_(grad)
        update.div_(_clip_divisor(update, clip_threshold))
        exp_avg.lerp_(update, 1 - beta1)
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        param.add_(exp_avg, alpha=-lr)


def _multi_tensor_came(
    factored: Sequence[list[Tensor]],
    unfactored: Sequence[list[Tensor]],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    eps1: float,
    eps2: float,
    clip_threshold: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    _update_factored(
        *factored,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        eps1=eps1,
        eps2=eps2,
        clip_threshold=clip_threshold,
        weight_decay=weight_decay,
        maximize=maximize,
    )
    if not unfactored[0]:
        return
    for (params, grads, exp_avgs, exp_avg_sqs), _ in group_by_device_and_dtype(list(unfactored)):
        if maximize:
            grads = torch._foreach_neg(grads)
        squares = torch._foreach_mul(grads, grads)
        torch._foreach_add_(squares, eps1)
        torch._foreach_lerp_(exp_avg_sqs, squares, 1 - beta2)
        updates = torch._foreach_rsqrt(exp_avg_sqs)
        torch._foreach_mul_(updates, grads)
        divisors = torch._foreach_norm(updates)
        torch._foreach_div_(divisors, [math.sqrt(u.numel()) * clip_threshold for u in updates])
        torch._foreach_clamp_min_(divisors, 1.0)
        torch._foreach_div_(updates, divisors)
        torch._foreach_lerp_(exp_avgs, updates, 1 - beta1)
        if weight_decay != 0:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_add_(params, exp_avgs, alpha=-lr)
