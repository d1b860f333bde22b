"""Hybrid Adam+SGD: an AdamW step blended into heavy-ball SGD, the Adam weight falling linearly over training.

``HybridAdamSGD`` holds the algorithm and the ``step`` loop; ``BranchNorms`` are the optional per-step branch
magnitudes. The study settings it was published with are in the bundled ``hybrid_csqa`` study spec.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import (
    check_beta,
    check_betas,
    check_eps,
    check_lr,
    check_nonnegative,
    check_positive_int,
    document_args,
    evaluate_closure,
    group_by_device_and_dtype,
    params_with_grad,
    real_views,
    use_foreach,
)
from ._fused import check_fused, fused_hybrid_adam_sgd, use_fused

__all__ = ["BranchNorms", "HybridAdamSGD"]

class BranchNorms(NamedTuple):
    """One step's branch magnitudes before the lr: L2 norms over every parameter that stepped, as 0-dim
    tensors (at least float32, on the first such parameter's device) so logging costs no host sync."""

    adam: Tensor  # ||a_t * adam_t||
    sgd: Tensor  # ||sgd_lr_scale * (1 - a_t) * b_t||


@document_args("maximize", "foreach", "fused")
class HybridAdamSGD(Optimizer):
    r"""Hybrid Adam+SGD: a per-parameter blend of an AdamW step and an unnormalised heavy-ball SGD step whose Adam
    weight falls linearly from 1 to ``final_ratio`` over ``transition_steps`` steps. No paper; the rule of the
    "Qwen3 optimizer comparison study" (``ivrejchik/qwen3-optimizer-study`` at 2f07ada,
    ``utils/hybrid_adam_sgd.py``). Semantics of that reference class ``AdamSGDHybrid``, as specified in
    ``docs/hybrid_adam_sgd.md``.

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2, \mu \text{ (momentum)}, \epsilon,
                \lambda \text{ (weight decay)}, T \text{ (transition\_steps)}, r \text{ (final\_ratio)},
                \theta_0, f(\theta) \\
            &\textbf{initialize}: m_0, v_0, b_0 \leftarrow 0 \\
            &\textbf{for}\ t = 1, 2, \ldots\ \textbf{do} \quad (t \text{ counts this parameter's own steps}) \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})
                \quad (\text{negated if maximize}) \\
            &\quad \theta_t \leftarrow \theta_{t-1} (1 - \gamma\lambda) \\
            &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
            &\quad v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
            &\quad b_t \leftarrow \mu b_{t-1} + g_t
                \quad (\mu b_{t-1} + (1 - \mu) g_t \text{ with sgd\_dampening}) \\
            &\quad a_t \leftarrow 1 - \min(t / T, 1)\,(1 - r) \\
            &\quad u_t \leftarrow \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon} \\
            &\quad \theta_t \leftarrow \theta_t - \gamma\,\big(a_t u_t + s\,(1 - a_t)\, b_t\big)
                \quad (s = \text{sgd\_lr\_scale}, 1 \text{ by default}) \\
            &\textbf{return}\ \theta_t
        \end{aligned}

    The SGD branch is not normalised: for a steady gradient :math:`b \to g / (1 - \mu)`, so after the transition
    it dominates only where :math:`|g|` is large and elsewhere the rule acts like AdamW with a decaying lr (spec
    §4). ``track_branch_norms=True`` logs both branch magnitudes to make that visible.

    Numerics: the update is evaluated as
    :math:`\theta \mathrel{+}= -\gamma a_t \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
    \frac{m_t}{\sqrt{v_t} + \epsilon\sqrt{1-\beta_2^t}} - \gamma s (1 - a_t) b_t` and :math:`m` with ``lerp`` as
    in ``torch.optim.Adam``: algebraically the spec's order, three fewer kernels, equal to a literal transcription
    to ~1e-15 in float64. ``final_ratio=1`` is ``torch.optim.AdamW``; ``final_ratio=0, transition_steps=1,
    weight_decay=0`` is ``torch.optim.SGD(momentum=μ)`` exactly.

    Betas: each group carries both ``betas`` and the reference's ``beta1``/``beta2``. When a group is added, its
    own ``beta1``/``beta2`` win over its own ``betas``, which win over the constructor's, so param groups written
    for the reference keep working. After that ``betas`` is the value used (as torch schedulers such as
    ``OneCycleLR`` edit it) and ``beta1``/``beta2`` are refreshed from it at every step.

    State per parameter: the Python int ``step`` and ``exp_avg``, ``exp_avg_sq``, ``momentum_buf`` in the
    parameter's dtype, created the first time it has a gradient. A parameter without a gradient keeps its step, so
    its blend ratio lags. Weight decay is decoupled, applied first and scaled by the group's current lr.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-4; the study used 1e-5: see the ``hybrid_csqa`` study).
        betas: :math:`(\beta_1, \beta_2)` of the Adam branch (default (0.9, 0.999)).
        momentum: :math:`\mu` of the SGD branch (default 0.9).
        eps: :math:`\epsilon`, added after the bias-corrected square root; may be 0 (default 1e-8).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0.01).
        transition_steps: steps :math:`T` over which the Adam weight falls to ``final_ratio`` (int >= 1, default 1000).
        final_ratio: Adam weight :math:`r` after the transition, in [0, 1] (default 0.1).
        sgd_dampening: variant, off by default: :math:`b \leftarrow \mu b + (1 - \mu) g`.
        sgd_lr_scale: variant, 1 (off) by default: multiplies the SGD branch.
        track_branch_norms: append one :class:`BranchNorms` per step to ``self.branch_norms`` (default off).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        momentum: float = 0.9,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        transition_steps: int = 1000,
        final_ratio: float = 0.1,
        *,
        sgd_dampening: bool = False,
        sgd_lr_scale: float = 1.0,
        track_branch_norms: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_betas(betas)
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            beta1=betas[0],
            beta2=betas[1],
            momentum=momentum,
            eps=eps,
            weight_decay=weight_decay,
            transition_steps=transition_steps,
            final_ratio=final_ratio,
            sgd_dampening=sgd_dampening,
            sgd_lr_scale=sgd_lr_scale,
            track_branch_norms=track_branch_norms,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        _check_hparams(defaults)
        self.branch_norms: list[BranchNorms] = []
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("branch_norms", [])  # the log is diagnostics, not state: not pickled

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        betas = param_group.get("betas", self.defaults["betas"])
        check_betas(betas)
        param_group["beta1"] = param_group.get("beta1", betas[0])
        param_group["beta2"] = param_group.get("beta2", betas[1])
        param_group["betas"] = (param_group["beta1"], param_group["beta2"])
        _check_hparams({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def hybrid_ratio(self) -> float:
        """The Adam weight a_t, as the reference's ``get_hybrid_ratio()``: evaluated at the step of the first
        parameter of the first group that has state; 1.0 before any step, 0.0 without param groups."""
        if not self.param_groups:
            return 0.0
        group = self.param_groups[0]
        for p in group["params"]:
            state = self.state.get(p)
            if state:
                return _adam_weight(state["step"], group["transition_steps"], group["final_ratio"])
        return 1.0

    def label(self) -> str:
        """Name for reporting results: ``hybrid_adam_sgd`` plus every variant a group runs, e.g.
        ``hybrid_adam_sgd[sgd_dampening,sgd_lr_scale=0.1]``, so a variant is never reported as the plain rule."""
        variants = set()
        for group in self.param_groups:
            if group["sgd_dampening"]:
                variants.add("sgd_dampening")
            if group["sgd_lr_scale"] != 1:
                variants.add(f"sgd_lr_scale={group['sgd_lr_scale']:g}")
        return "hybrid_adam_sgd" + (f"[{','.join(sorted(variants))}]" if variants else "")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        adam_norms: list[Tensor] = []
        sgd_norms: list[Tensor] = []
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, momentum_bufs, states = [], [], [], [], [], []
            for p, grad in params_with_grad(group, "HybridAdamSGD"):
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["momentum_buf"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                momentum_bufs.append(state["momentum_buf"])
                states.append(state)
            if not params:
                continue
            # Counters advance only once the whole group is collected: a sparse gradient leaves them untouched.
            for state in states:
                state["step"] += 1
            beta1, beta2 = group["betas"]
            group["beta1"], group["beta2"] = beta1, beta2
            update = _multi_tensor_hybrid_adam_sgd if use_foreach(group, params) else _single_tensor_hybrid_adam_sgd
            if use_fused(group, params):
                update = fused_hybrid_adam_sgd
            update(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                momentum_bufs,
                [state["step"] for state in states],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                momentum=group["momentum"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                transition_steps=group["transition_steps"],
                final_ratio=group["final_ratio"],
                sgd_dampening=group["sgd_dampening"],
                sgd_lr_scale=group["sgd_lr_scale"],
                maximize=group["maximize"],
                branch_norms=(adam_norms, sgd_norms) if group["track_branch_norms"] else None,
            )
        if adam_norms:
            self.branch_norms.append(BranchNorms(_global_norm(adam_norms), _global_norm(sgd_norms)))
        return loss


def _check_hparams(group: dict[str, Any]) -> None:
    check_lr(group["lr"])
    check_beta(group["beta1"], "beta1")  # betas is (beta1, beta2) once a group is built
    check_beta(group["beta2"], "beta2")
    check_beta(group["momentum"], "momentum")
    check_eps(group["eps"], allow_zero=True)
    check_nonnegative(group["weight_decay"], "weight_decay")
    check_positive_int(group["transition_steps"], "transition_steps")
    final_ratio = group["final_ratio"]
    if isinstance(final_ratio, bool) or not isinstance(final_ratio, (int, float)) or not 0 <= final_ratio <= 1:
        raise ValueError(f"Invalid final_ratio: {final_ratio!r} (expected a float in [0, 1])")
    check_nonnegative(group["sgd_lr_scale"], "sgd_lr_scale")


def _adam_weight(step: int, transition_steps: int, final_ratio: float) -> float:
    """a_t: the Adam branch's weight, linear from 1 at step 0 to ``final_ratio`` at ``transition_steps``."""
    return 1 - min(step / transition_steps, 1.0) * (1 - final_ratio)


class _StepScalars(NamedTuple):
    eps: float  # eps * sqrt(1 - beta2^t): eps moved under the common denominator sqrt(v)
    adam: float  # a_t * sqrt(1 - beta2^t) / (1 - beta1^t): the Adam branch is adam * m / (sqrt(v) + eps)
    sgd: float  # sgd_lr_scale * (1 - a_t): the SGD branch is sgd * b


def _step_scalars(
    steps: list[int],
    *,
    beta1: float,
    beta2: float,
    eps: float,
    transition_steps: int,
    final_ratio: float,
    sgd_lr_scale: float,
) -> dict[int, _StepScalars]:
    """The per-step Python scalars, once per distinct step count (usually one per group)."""
    scalars = {}
    for step in set(steps):
        adam_weight = _adam_weight(step, transition_steps, final_ratio)
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        scalars[step] = _StepScalars(
            eps * bias_correction2_sqrt,
            adam_weight * bias_correction2_sqrt / (1 - beta1**step),
            sgd_lr_scale * (1 - adam_weight),
        )
    return scalars


def _global_norm(norms: list[Tensor]) -> Tensor:
    stacked = torch.stack([norm.to(norms[0].device) for norm in norms])
    return torch.linalg.vector_norm(stacked, dtype=torch.promote_types(stacked.dtype, torch.float32))


def _single_tensor_hybrid_adam_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    momentum_bufs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    momentum: float,
    eps: float,
    weight_decay: float,
    transition_steps: int,
    final_ratio: float,
    sgd_dampening: bool,
    sgd_lr_scale: float,
    maximize: bool,
    branch_norms: tuple[list[Tensor], list[Tensor]] | None,
) -> None:
    params, grads, exp_avgs, exp_avg_sqs, momentum_bufs = real_views(
        params, grads, exp_avgs, exp_avg_sqs, momentum_bufs
    )
    scalars = _step_scalars(
        steps,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        transition_steps=transition_steps,
        final_ratio=final_ratio,
        sgd_lr_scale=sgd_lr_scale,
    )
    grad_weight = 1 - momentum if sgd_dampening else 1.0
    for param, grad, exp_avg, exp_avg_sq, buf, step in zip(params, grads, exp_avgs, exp_avg_sqs, momentum_bufs, steps):
        if maximize:
            grad = -grad
        # x * c as x + (c - 1) * x, the forms the foreach path needs for speed: the two paths agree bit for bit.
        if weight_decay != 0:
            param.add_(param, alpha=-lr * weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.add_(exp_avg_sq, alpha=beta2 - 1).addcmul_(grad, grad, value=1 - beta2)
        buf.add_(buf, alpha=momentum - 1).add_(grad, alpha=grad_weight)
        scalar = scalars[step]
        denom = exp_avg_sq.sqrt().add_(scalar.eps)
        param.addcdiv_(exp_avg, denom, value=-lr * scalar.adam)
        param.add_(buf, alpha=-lr * scalar.sgd)
        if branch_norms is not None:
            branch_norms[0].append(torch.linalg.vector_norm(exp_avg / denom) * scalar.adam)
            branch_norms[1].append(torch.linalg.vector_norm(buf) * scalar.sgd)


def _multi_tensor_hybrid_adam_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    momentum_bufs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    momentum: float,
    eps: float,
    weight_decay: float,
    transition_steps: int,
    final_ratio: float,
    sgd_dampening: bool,
    sgd_lr_scale: float,
    maximize: bool,
    branch_norms: tuple[list[Tensor], list[Tensor]] | None,
) -> None:
    scalars = _step_scalars(
        steps,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        transition_steps=transition_steps,
        final_ratio=final_ratio,
        sgd_lr_scale=sgd_lr_scale,
    )
    grad_weight = 1 - momentum if sgd_dampening else 1.0
    grouped = group_by_device_and_dtype([params, grads, exp_avgs, exp_avg_sqs, momentum_bufs])
    for (device_params, device_grads, device_exp_avgs, device_exp_avg_sqs, device_bufs), positions in grouped:
        device_scalars = [scalars[steps[i]] for i in positions]
        if maximize:
            device_grads = torch._foreach_neg(device_grads)
        # x * c is written x + (c - 1) * x: on CPU the foreach Scalar overloads box the number once per tensor and
        # cost ~4x the List overload. Equal to rounding; the single-tensor loop uses the same forms.
        if weight_decay != 0:
            torch._foreach_add_(device_params, device_params, alpha=-lr * weight_decay)
        torch._foreach_lerp_(device_exp_avgs, device_grads, 1 - beta1)
        torch._foreach_add_(device_exp_avg_sqs, device_exp_avg_sqs, alpha=beta2 - 1)
        torch._foreach_addcmul_(device_exp_avg_sqs, device_grads, device_grads, value=1 - beta2)
        torch._foreach_add_(device_bufs, device_bufs, alpha=momentum - 1)
        torch._foreach_add_(device_bufs, device_grads, alpha=grad_weight)
        denoms = torch._foreach_sqrt(device_exp_avg_sqs)
        torch._foreach_add_(denoms, [scalar.eps for scalar in device_scalars])
        adam_weights = [-lr * scalar.adam for scalar in device_scalars]
        torch._foreach_addcdiv_(device_params, device_exp_avgs, denoms, adam_weights)
        # add_ takes one alpha per call, and the SGD weight depends only on the step count: one call per count.
        by_step: dict[int, list[int]] = {}
        for j, i in enumerate(positions):
            by_step.setdefault(steps[i], []).append(j)
        for step, members in by_step.items():
            torch._foreach_add_(
                [device_params[j] for j in members], [device_bufs[j] for j in members], alpha=-lr * scalars[step].sgd
            )
        if branch_norms is not None:
            ratio_norms = torch._foreach_norm(torch._foreach_div(device_exp_avgs, denoms))
            branch_norms[0].extend(torch._foreach_mul(ratio_norms, [scalar.adam for scalar in device_scalars]))
            branch_norms[1].extend(
                torch._foreach_mul(torch._foreach_norm(device_bufs), [scalar.sgd for scalar in device_scalars])
            )
