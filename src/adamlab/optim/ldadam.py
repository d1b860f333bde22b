"""LDAdamW: Adam run on low-rank projections of each matrix's gradient, with error feedback for what the
projection drops.

``LDAdamW`` steps low-rank groups with ``_lowrank_ldadam`` (one matrix at a time: matmuls have no foreach
kernels) and the other groups with the shared AdamW kernel (``_adamw``); ``ldadam_param_groups`` decides which of a
model's matrices go low-rank.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ._adamw import multi_tensor_adamw, single_tensor_adamw
from ._common import (
    check_beta,
    check_betas,
    check_eps,
    check_lr,
    check_nonnegative,
    check_positive_int,
    document_args,
    evaluate_closure,
    params_with_grad,
    reject_complex,
    use_foreach,
)
from ._fused import check_fused, fused_adamw, use_fused
from .param_groups import no_weight_decay

__all__ = ["LDADAM_TARGETS", "LDAdamW", "ldadam_param_groups"]

PROJ_TYPES = ("std", "reverse_std", "left", "right")
PROJ_METHODS = ("power_iteration", "svd", "svd_lowrank")
EF_STORAGES = ("state", "grad")
STEP_COUNTERS = ("global", "per_param")
FORMAT_VERSION = 1  # of the state_dict; load_state_dict refuses any other
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@document_args(
    "maximize",
    "foreach",
    "fused",
    foreach="use the multi-tensor path for the elementwise (non-low-rank) groups (``None`` = whenever the tensors "
    "allow it).",
    fused="compile the elementwise (non-low-rank) groups' update into one kernel, and form low-rank groups' power "
    "step without a strided copy (default off; see ``adamlab.optim._fused``).",
)
class LDAdamW(Optimizer):
    r"""LDAdamW: Adam from low-dimensional gradient statistics, with a projection-aware state update and
    generalized error feedback (Robert, Safaryan, Modoranu & Alistarh, 2025, ICLR, "LDAdam: Adaptive Optimization
    from Low-Dimensional Gradient Statistics", arXiv:2410.16103). Semantics of the official ``ldadamw_torch.LDAdamW``
    (``IST-DASLab/LDAdam`` at f3c5daf, after the Q∘Q fix c9cd09a), as specified in ``docs/ldadam.md``.

    A matrix :math:`W \in \mathbb{R}^{m \times n}` in a group with ``enable_lowrank=True`` is written in left form:
    :math:`X = a` for left projection, :math:`X = a^\top` for right projection (``proj_type="std"`` projects the
    smaller side; square matrices go left), so :math:`X \in \mathbb{R}^{d \times D}`,
    :math:`P \in \mathbb{R}^{d \times r}` and :math:`m, v \in \mathbb{R}^{r \times D}`. With :math:`k` the steps
    completed before this one, :math:`b_1(j) = 1 - \beta_1^j` and :math:`b_2(j) = 1 - \beta_2^j`:

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2, \rho, r \text{ (rank)}, \epsilon,
                \lambda \text{ (weight decay)}, W_0, f(W) \\
            &\textbf{initialize}: m, v \leftarrow 0,\ e \leftarrow 0 \\
            &\textbf{for}\ k = 0, 1, \ldots\ \textbf{do} \\
            &\quad X \leftarrow \nabla_W f_k(W) + e \quad (\text{gradient negated if maximize}) \\
            &\quad \textbf{if}\ k = 0:\ P \leftarrow \text{top-}r \text{ left singular vectors of } X,\quad
                Q \leftarrow 0 \\
            &\quad \textbf{else}:\ B \leftarrow \rho P_{old} \, m / b_1(k) + (1 - \rho) X,\quad
                P \leftarrow \mathrm{QR}\big(B B^\top P_{old}\big)
                \ (\text{or top-}r \text{ singular vectors of } B),\quad Q \leftarrow P^\top P_{old} \\
            &\quad \tilde g \leftarrow P^\top X, \qquad \tilde m \leftarrow Q m \\
            &\quad e \leftarrow X - P \tilde g + \tfrac{\beta_1}{1 - \beta_1} (P_{old} m - P \tilde m)
                \quad (\text{if error\_feedback}) \\
            &\quad \textbf{if}\ k > 0:\ v \leftarrow b_2(k) \Big| (Q \circ Q)
                \big(v / b_2(k) - m^2 / b_1(k)^2\big) + \tilde m^2 / b_1(k)^2 \Big| \\
            &\quad m \leftarrow \beta_1 \tilde m + (1 - \beta_1) \tilde g, \qquad
                v \leftarrow \beta_2 v + (1 - \beta_2) \tilde g^2 \\
            &\quad W \leftarrow W (1 - \gamma\lambda) - \gamma P
                \frac{m / b_1(k+1)}{\sqrt{v / b_2(k+1)} + \epsilon}
                \quad (\text{transposed back for right projection}),\qquad P_{old} \leftarrow P \\
            &\textbf{return}\ W
        \end{aligned}

    Groups with ``enable_lowrank=False`` (the default) run AdamW with the same :math:`k`. SVD and QR run in float32
    as in the official code (``decomp_dtype`` changes that). Column signs of :math:`P` are arbitrary; the update is
    invariant to them. For a right-projected matrix the SVD is taken of :math:`G` (not :math:`G^\top`), as the
    official code does: the other way rounds differently in float32 and drifts ~1e-6 in 50 steps.

    Constructor, group keys and numerics are the official ones, so code written for ``ldadamw_torch.LDAdamW``
    ports by changing the import. Where the official code has pitfalls (spec §8) this one differs:

    * **Exact resume.** ``state_dict()`` holds the step counter (``completed_steps`` in every group, ``step`` per
      parameter), the projector and the error buffer, and a ``format_version``; 10 + 10 resumed steps equal 20
      straight ones bit for bit. The official code restarts at :math:`k = 0` and loses the error buffer.
    * **Error buffer in the state** (``ef_storage="state"``, the default): :math:`X = g + e` at step time, the same
      values as the official ``p.grad`` accumulation (IEEE addition commutes), but it survives
      ``zero_grad(set_to_none=True)``, ``model.zero_grad()`` and accelerate, and gradient clipping clips only
      :math:`g`. It costs one :math:`m \times n` buffer per matrix that gradients would otherwise hold.
      ``ef_storage="grad"`` is the official mechanism: ``step()`` writes :math:`e` into ``p.grad``, ``zero_grad``
      leaves those gradients for the next ``backward()`` to add onto, ``model.zero_grad()`` silently drops
      :math:`e`, clipping clips :math:`g + e`, and a resume loses :math:`e`. ``zero_grad`` has the standard
      signature either way.
    * **Per-group betas.** ``betas`` in a group is honoured (the official code ignores it); the official
      ``beta1``/``beta2`` group keys work too, and one that contradicts the group's ``betas`` raises.
    * **Every hyperparameter is read from its group at every step** (the official code reads ``eps`` once), except
      ``rank`` and ``proj_type``, which fix a matrix's state shapes when its state is created.
    * **Lazy state**, created at a parameter's first step on its device (``.to()`` before then is safe).
    * ``enable_lowrank`` defaults to ``False`` (official: ``KeyError``); a parameter that is not 2-D in a low-rank
      group and ``rank > min(m, n)`` raise ``ValueError`` when the group is added, ``rank == min(m, n)`` warns (no
      compression); ``betas`` may be a list; per-group values are validated like the constructor's; ``lr = 0`` is
      allowed.

    Options the official code lacks: ``step_counter="per_param"`` gives each parameter its own :math:`k` (a
    deviation: the official :math:`k` counts every ``step()`` call, so a parameter that had no gradient still sees
    it advance); ``state_dtype=torch.float32`` keeps the state of bf16/fp16 parameters in float32 (state is in the
    wider of the two dtypes); ``decomp_dtype="param"`` runs SVD/QR in float64 for float64 parameters (exact tests).
    With either counter, a matrix's first step (no projector yet) runs the SVD initialisation.

    Data parallelism: DDP only. Every rank must hold the same full, averaged gradient, so every rank computes the
    same projector; ZeRO/FSDP shards are unsupported. ``svd_lowrank`` draws from the global RNG: seed every rank
    alike, and expect runs to be reproducible only under identical seeding.

    State per low-rank matrix: ``step``, ``projector`` :math:`(d, r)`, ``exp_avg`` and ``exp_avg_sq``
    :math:`(r, D)` (the official right-projection tensors transposed), and with ``ef_storage="state"`` ``error`` in
    the parameter's shape: :math:`2rD + dr` elements against AdamW's :math:`2mn`, plus :math:`mn` for ``error``.
    Per other parameter: ``step``, ``exp_avg``, ``exp_avg_sq``. ``ldadam_param_groups`` builds the groups for a
    model.

    Args:
        params: parameters or param groups. Group keys: the arguments below, plus the official ``beta1`` /
            ``beta2``.
        lr: learning rate :math:`\gamma` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)` (default (0.908, 0.99), the official defaults).
        eps: :math:`\epsilon`, added after the square root (default 1e-8).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0).
        rank: :math:`r`, the dimension of the subspace (default 16).
        rho: :math:`\rho`, weight of the previous momentum in the subspace update (default 0.908).
        proj_type: ``"std"`` (project the smaller side), ``"reverse_std"``, ``"left"`` or ``"right"``.
        proj_method: ``"power_iteration"`` (one warm-started block power step, default), ``"svd"`` or
            ``"svd_lowrank"`` (randomised).
        error_feedback: carry the compression and subspace-change residual :math:`e` to the next step.
        enable_lowrank: the default for groups that do not set it.
        ef_storage: ``"state"`` or ``"grad"`` (see above).
        step_counter: ``"global"`` (official) or ``"per_param"``.
        state_dtype: ``None`` (the parameter's dtype, official) or ``torch.float32`` / ``torch.float64``.
        decomp_dtype: dtype of SVD/QR: ``torch.float32`` (official), ``torch.float64`` or ``"param"``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.908, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        rank: int = 16,
        rho: float = 0.908,
        proj_type: str = "std",
        proj_method: str = "power_iteration",
        error_feedback: bool = True,
        *,
        enable_lowrank: bool = False,
        ef_storage: str = "state",
        step_counter: str = "global",
        state_dtype: torch.dtype | str | None = None,
        decomp_dtype: torch.dtype | str = torch.float32,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            rank=rank,
            rho=rho,
            proj_type=proj_type,
            proj_method=proj_method,
            error_feedback=error_feedback,
            enable_lowrank=enable_lowrank,
            ef_storage=ef_storage,
            step_counter=step_counter,
            state_dtype=state_dtype,
            decomp_dtype=decomp_dtype,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        _check_options(defaults)
        super().__init__(params, defaults)

    @classmethod
    def from_model(cls, model: nn.Module, **hparams: Any) -> LDAdamW:
        """The optimizer for ``model`` with ``ldadam_param_groups``' groups: attention/MLP matrices low-rank,
        everything else AdamW. This is what ``create_optimizer("ldadam", model, ...)`` builds."""
        rank = hparams.get("rank", inspect.signature(cls).parameters["rank"].default)
        return cls(ldadam_param_groups(model, rank=rank), **hparams)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = dict(param_group)
        beta1, beta2 = group.pop("beta1", None), group.pop("beta2", None)
        if beta1 is not None or beta2 is not None:
            # The official per-group keys: they fill in what they name, and must agree with the group's own betas.
            own = group.get("betas")
            if own is not None:
                check_betas(own)
            base = own if own is not None else self.defaults["betas"]
            merged = (base[0] if beta1 is None else beta1, base[1] if beta2 is None else beta2)
            if own is not None and tuple(own) != merged:
                raise ValueError(f"group sets betas={tuple(own)} and beta1/beta2={merged}; give one or the other")
            group["betas"] = merged
        super().add_param_group(group)
        group = self.param_groups[-1]
        try:
            _check_options(group)
            if group["enable_lowrank"]:
                for p in group["params"]:
                    if p.requires_grad:  # frozen params never step, as in the official code
                        _check_lowrank_shape(p, group["rank"], group["proj_type"], warn=True)
        except ValueError:
            self.param_groups.pop()
            raise
        group["completed_steps"] = max((g["completed_steps"] for g in self.param_groups[:-1]), default=0)
        group["format_version"] = FORMAT_VERSION

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            if group["enable_lowrank"]:
                self._step_lowrank(group)
            else:
                self._step_full(group)
            group["completed_steps"] += 1  # every group, with or without gradients: the official global k
        return loss

    def _steps_before(self, group: dict, state: dict) -> int:
        """k, the steps completed before this one, for the bias corrections."""
        return group["completed_steps"] if group["step_counter"] == "global" else state["step"]

    def _step_lowrank(self, group: dict) -> None:
        """The group's matrices in two passes: first each accumulated gradient and its power-iteration block, then
        the QR of every block (same-shaped ones in one batched call) and the rest of each matrix's step."""
        beta1, beta2 = group["betas"]
        matrices = []
        with_grads = list(params_with_grad(group, "LDAdamW"))
        fused = use_fused(group, [p for p, _ in with_grads])
        for p, grad in with_grads:
            state = self.state[p]
            if not state:
                _check_lowrank_shape(p, group["rank"], group["proj_type"], warn=False)
                state["step"] = 0
            options = dict(
                k=self._steps_before(group, state),
                beta1=beta1,
                rho=group["rho"],
                right=_projects_right(*p.shape, group["proj_type"]),
                proj_method=group["proj_method"],
                error_feedback=group["error_feedback"],
                dtype=_state_dtype(group, p),
                maximize=group["maximize"],
            )
            power_step = _accumulate_and_power_step(grad, state, fused=fused, **options)
            matrices.append((p, grad, state, options, *power_step))
        projectors = _orthonormal_bases([block for *_, block in matrices], group["decomp_dtype"])
        for (p, grad, state, options, a, _), p_new in zip(matrices, projectors):
            _lowrank_ldadam(
                p,
                grad,
                state,
                a=a,
                p_new=p_new,
                lr=group["lr"],
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                rank=group["rank"],
                ef_in_grad=group["ef_storage"] == "grad",
                decomp_dtype=group["decomp_dtype"],
                **options,
            )
            state["step"] += 1

    def _step_full(self, group: dict) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p, grad in params_with_grad(group, "LDAdamW"):
            state = self.state[p]
            if not state:
                dtype = _state_dtype(group, p)
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            steps.append(self._steps_before(group, state) + 1)
            state["step"] += 1
            params.append(p)
            grads.append(grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        if not params:
            return
        update = multi_tensor_adamw if use_foreach(group, params) else single_tensor_adamw
        if use_fused(group, params):
            update = fused_adamw
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

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``torch.optim.Optimizer.zero_grad``, except that with ``ef_storage="grad"`` the low-rank matrices with
        error feedback keep ``p.grad``: it holds the error buffer the next ``backward()`` adds onto."""
        keep = {id(p) for group in self.param_groups if _ef_in_grad(group) for p in group["params"]}
        if not keep:
            super().zero_grad(set_to_none)
            return
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or id(p) in keep:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for group in state_dict["param_groups"]:
            if group.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"not an adamlab LDAdamW state_dict of format {FORMAT_VERSION} (a group has format_version="
                    f"{group.get('format_version')!r}); the official LDAdamW saves no step counter and cannot resume"
                )
        super().load_state_dict(state_dict)
        # torch casts every floating-point state tensor to its parameter's dtype: state kept wider (state_dtype)
        # is taken again from the saved tensors, losslessly.
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [(p, group) for group in self.param_groups for p in group["params"]]
        for (p, group), saved_id in zip(params, saved_ids):
            dtype = _state_dtype(group, p)
            if dtype == p.dtype or p not in self.state:
                continue
            for key, value in state_dict["state"][saved_id].items():
                if isinstance(value, Tensor) and value.is_floating_point():
                    self.state[p][key] = value.to(device=p.device, dtype=dtype)


# --- options and shapes ---------------------------------------------------------------------------------------


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} (expected one of {', '.join(map(repr, choices))})")


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {name}: {value!r} (expected a bool)")


def _as_dtype(value: Any, name: str, extra: tuple = ()) -> Any:
    """A torch float dtype from a dtype or its name ("float32", "torch.float32"); ``extra`` values pass as is."""
    if value in extra:
        return value
    if isinstance(value, str):
        value = _DTYPES.get(value.removeprefix("torch."), value)
    if value not in _DTYPES.values():
        allowed = ", ".join([*map(repr, extra), "torch.float32", "torch.float64"])
        raise ValueError(f"Invalid {name}: {value!r} (expected one of {allowed})")
    return value


def _check_options(options: dict[str, Any]) -> None:
    """Validate a group (or the defaults) in place; dtype names are turned into dtypes."""
    check_lr(options["lr"])
    check_betas(options["betas"])
    check_eps(options["eps"])
    check_nonnegative(options["weight_decay"], "weight_decay")
    check_positive_int(options["rank"], "rank")
    check_beta(options["rho"], "rho")
    _check_choice(options["proj_type"], "proj_type", PROJ_TYPES)
    _check_choice(options["proj_method"], "proj_method", PROJ_METHODS)
    _check_bool(options["error_feedback"], "error_feedback")
    _check_bool(options["enable_lowrank"], "enable_lowrank")
    _check_choice(options["ef_storage"], "ef_storage", EF_STORAGES)
    _check_choice(options["step_counter"], "step_counter", STEP_COUNTERS)
    options["state_dtype"] = _as_dtype(options["state_dtype"], "state_dtype", extra=(None,))
    options["decomp_dtype"] = _as_dtype(options["decomp_dtype"], "decomp_dtype", extra=("param",))


def _projects_right(m: int, n: int, proj_type: str) -> bool:
    """Which side the projection acts on (spec §1.3): ``std`` takes the smaller one, square matrices go left."""
    if proj_type == "std":
        return m > n
    if proj_type == "reverse_std":
        return m < n
    return proj_type == "right"


def _state_elements(m: int, n: int, rank: int) -> int:
    """Low-rank state of an m x n matrix, error buffer excluded: m and v (r x D), P (d x r)."""
    return 2 * rank * max(m, n) + min(m, n) * rank


def _check_lowrank_shape(p: Tensor, rank: int, proj_type: str, *, warn: bool) -> None:
    reject_complex([p], "LDAdamW with enable_lowrank=True", "the projection and its QR/SVD are those of real matrices "
                   "(complex parameters train in groups with enable_lowrank=False)")
    if p.dim() != 2:
        raise ValueError(
            f"LDAdamW: a parameter of shape {tuple(p.shape)} is in a group with enable_lowrank=True, which takes 2-D "
            "matrices only; put it in a group with enable_lowrank=False"
        )
    m, n = p.shape
    if rank > min(m, n):
        raise ValueError(f"LDAdamW: rank {rank} exceeds min(m, n) = {min(m, n)} for a {m}x{n} matrix")
    if warn and rank == min(m, n):
        side = "right" if _projects_right(m, n, proj_type) else "left"
        warnings.warn(
            f"LDAdamW: rank {rank} equals min(m, n) for a {m}x{n} matrix ({side} projection): the gradient is not "
            f"compressed and the state is {_state_elements(m, n, rank) / (2 * m * n):.0%} of AdamW's",
            stacklevel=5,
        )


def _state_dtype(group: dict, p: Tensor) -> torch.dtype:
    wider = group["state_dtype"]
    return p.dtype if wider is None else torch.promote_types(p.dtype, wider)


def _ef_in_grad(group: dict) -> bool:
    return group["enable_lowrank"] and group["error_feedback"] and group["ef_storage"] == "grad"


# --- the low-rank step ----------------------------------------------------------------------------------------


def _decomposition_dtype(decomp_dtype: torch.dtype | str, dtype: torch.dtype) -> torch.dtype:
    if decomp_dtype == "param":
        return torch.float64 if dtype == torch.float64 else torch.float32  # LAPACK has no half precision
    return decomp_dtype


def _leading_singular_vectors(x: Tensor, rank: int, right: bool, method: str, decomp_dtype: torch.dtype) -> Tensor:
    """The first ``rank`` left singular vectors of ``x`` (d x D) as a d x rank matrix in ``x``'s dtype. For right
    projection ``x`` is G^T: decompose G itself and take its right singular vectors, as the official code does;
    decomposing the transpose rounds differently in float32."""
    a = (x.mT if right else x).to(decomp_dtype)
    if method == "svd_lowrank":
        # q = rank + 2 as in the official code, capped where the matrix is too small for it
        u, _, v = torch.svd_lowrank(a, q=min(rank + 2, *a.shape), niter=1)
        vectors = v if right else u
    else:
        u, _, vh = torch.linalg.svd(a, full_matrices=False)
        vectors = vh.mT if right else u
    return vectors[:, :rank].to(x.dtype).contiguous()


def _accumulate_and_power_step(
    grad: Tensor,
    state: dict,
    *,
    k: int,
    beta1: float,
    rho: float,
    right: bool,
    proj_method: str,
    error_feedback: bool,
    dtype: torch.dtype,
    maximize: bool,
    fused: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The first half of spec §3 (1) for one matrix: the accumulated gradient a = g + e, summed into the error
    buffer (the next error is written over it, so no buffer is allocated per step), and the power-iteration block
    Y = B B^T P_old whose QR gives the new basis; Y is None where the basis comes from an SVD (first step, SVD
    methods). ``fused`` forms B without a strided copy (``_right_power_block``)."""
    g = grad.to(dtype)
    # With ef_storage="grad", p.grad already is g + e (backward added onto the buffer step() left there).
    error_buffer = state.get("error") if error_feedback else None
    if error_buffer is not None:
        a = error_buffer.sub_(g) if maximize else error_buffer.add_(g)
    else:
        a = -g if maximize else g
    p_old = state.get("projector")
    if p_old is None or proj_method != "power_iteration":
        return a, None
    if fused and right:
        return a, _right_power_block(a, p_old, state["exp_avg"], x_weight=1 - rho,
                                     momentum_weight=rho / (1 - beta1**k))
    x = a.mT if right else a
    # One block power step on B B^T, warm-started at the old basis; B = rho P m / bc1 + (1 - rho) x in one addmm.
    b = torch.addmm(x, p_old, state["exp_avg"], beta=1 - rho, alpha=rho / (1 - beta1**k))
    return a, b @ (b.mT @ p_old)


def _right_power_block(a: Tensor, p_old: Tensor, exp_avg: Tensor, *, x_weight: float,
                       momentum_weight: float) -> Tensor:
    """The fused path's Y = B B^T P_old for a right-projected matrix, B = x_weight x + momentum_weight P_old m
    formed in the parameter's layout. There x is the transposed view a^T, and the reference's ``addmm(x, ...)``
    first copies that strided view into B, the costliest single op of its step on CPU; here
    B^T = x_weight a + momentum_weight m^T P_old^T is written contiguously from a, and Y = (B^T)^T (B^T P_old): the
    same products, so the same values to rounding. (A left-projected matrix's x is a itself: nothing to save.)

    Two cheaper forms were measured and left out because they move the float32 result by more than 1e-6 relative
    in 50 steps (the error buffer, a small difference of large terms, carries ~1e-5 of rounding in float32: the
    reference itself is 1.8e-5 from its float64 run there): not forming B at all (B^T P_old = x_weight x^T P_old +
    momentum_weight m^T P_old^T P_old, one full-size pass fewer), and compiling the r x D work between the
    products (moments, direction, the residual's factors: ~30 small ops per matrix, 10% of the step at rank 16)."""
    b_t = torch.addmm(a, exp_avg.mT, p_old.mT, beta=x_weight, alpha=momentum_weight)
    return b_t.mT @ (b_t @ p_old)


def _orthonormal_bases(blocks: list[Tensor | None], decomp_dtype: torch.dtype | str) -> list[Tensor | None]:
    """Q of each block's QR, in the block's dtype (None stays None). Same-shaped blocks (a model's q/k/v/o or
    its MLP matrices) go through ``torch.linalg.qr`` as one batch: one call instead of one per matrix."""
    batches: dict[tuple, list[int]] = {}
    for i, block in enumerate(blocks):
        if block is not None:
            batches.setdefault((block.shape, block.dtype, block.device), []).append(i)
    bases: list[Tensor | None] = [None] * len(blocks)
    for (_, dtype, _), members in batches.items():
        stacked = torch.stack([blocks[i] for i in members]).to(_decomposition_dtype(decomp_dtype, dtype))
        for i, q in zip(members, torch.linalg.qr(stacked).Q.to(dtype).unbind()):
            bases[i] = q.contiguous()
    return bases


def _lowrank_ldadam(
    param: Tensor,
    grad: Tensor,
    state: dict,
    *,
    a: Tensor,
    p_new: Tensor | None,
    k: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    rank: int,
    rho: float,
    right: bool,
    proj_method: str,
    error_feedback: bool,
    ef_in_grad: bool,
    dtype: torch.dtype,
    decomp_dtype: torch.dtype | str,
    maximize: bool,
) -> None:
    """The rest of one LDAdam step of a matrix after ``_accumulate_and_power_step`` (``a``) and the batched QR
    (``p_new``, or None to take it from an SVD here), in left form (x = a, or a^T for right projection); the
    numbered steps are spec §3's. Matmuls have no foreach kernels, so both paths run this.

    The step is bound by its full-size (d x D) passes, so each full-size result is one BLAS call writing one
    buffer: B and the new error are each one ``addmm`` over the stacked low-rank factors, the error is written
    into the buffer that held a, and the update lands in the parameter with ``addmm_``. The results equal the
    textbook order of operations to rounding."""
    decomp_dtype = _decomposition_dtype(decomp_dtype, dtype)
    error_buffer = state.get("error") if error_feedback else None
    x = a.mT if right else a
    p_old = state.get("projector")

    # (1) the subspace, where it is not the power step's QR
    bc1_k, bc2_k = 1 - beta1**k, 1 - beta2**k
    if p_old is None:
        p_new = _leading_singular_vectors(x, rank, right, proj_method, decomp_dtype)
    elif p_new is None:
        b = torch.addmm(x, p_old, state["exp_avg"], beta=1 - rho, alpha=rho / bc1_k)  # rho P m / bc1 + (1 - rho) x
        p_new = _leading_singular_vectors(b, rank, right, proj_method, decomp_dtype)
        del b
    if p_old is not None:
        m, v = state["exp_avg"], state["exp_avg_sq"]

    # (2) project the gradient; (3) the first moment in the new basis
    g_low = p_new.mT @ x
    if p_old is None:
        m_rot, v = torch.zeros_like(g_low), torch.zeros_like(g_low)
    else:
        q = p_new.mT @ p_old
        m_rot = q @ m

    # (4) the residual: what the projection dropped, plus the momentum lost by turning the subspace,
    # x - P_new g_low + c (P_old m - P_new m_rot) = x + [P_old, P_new] [c m; -(g_low + c m_rot)]
    if error_feedback:
        if p_old is None:
            factors, coefficients = p_new, -g_low
        else:
            c = beta1 / (1 - beta1)
            factors = torch.cat([p_old, p_new], dim=1)
            coefficients = torch.cat([m * c, -(g_low + m_rot * c)], dim=0)
        # in the parameter's layout: for right projection error = a - (F C)^T = a - C^T F^T
        left, right_factor = (coefficients.mT, factors.mT) if right else (factors, coefficients)
        if a is error_buffer:
            error = a.addmm_(left, right_factor)
        else:
            error = torch.addmm(a, left, right_factor)
        if ef_in_grad:
            grad.copy_(-error if maximize else error)
        else:
            state["error"] = error
    else:
        state.pop("error", None)  # error feedback was switched off: the old buffer is never used again

    # (5) the second moment in the new basis: variance rotated by Q∘Q, plus the rotated mean squared; |.| keeps v >= 0
    if p_old is not None:
        variance = (v / bc2_k).sub_(m.square().div_(bc1_k**2))
        v = (q.square() @ variance).add_(m_rot.square().div_(bc1_k**2)).mul_(bc2_k).abs_()

    # (6) Adam moments in the subspace
    m = m_rot.mul(beta1).add_(g_low, alpha=1 - beta1)
    v = v.mul(beta2).addcmul_(g_low, g_low, value=1 - beta2)

    # (7) the update, decoupled weight decay: param <- (1 - lr wd) param - lr P direction, one addmm_
    bc1, bc2 = 1 - beta1 ** (k + 1), 1 - beta2 ** (k + 1)
    direction = m.div(bc1).div_((v / bc2).sqrt_().add_(eps))
    decay = 1 - lr * weight_decay
    if param.dtype == dtype:
        left, right_factor = (direction.mT, p_new.mT) if right else (p_new, direction)
        param.addmm_(left, right_factor, beta=decay, alpha=-lr)
    else:  # a parameter narrower than its state: the update is rounded into it once
        update = p_new @ direction
        if weight_decay != 0:
            param.mul_(decay)
        param.add_(update.mT if right else update, alpha=-lr)
    state["projector"], state["exp_avg"], state["exp_avg_sq"] = p_new, m, v


# --- param groups for a model ------------------------------------------------------------------------------------

# Module-path fragments of the layers that go low-rank: Llama/Qwen/GPT-2 (self_attn, mlp), BERT/RoBERTa (attention,
# intermediate, output.dense), T5 (SelfAttention), others (ffn, feed_forward). LoRA factors inside them match too.
LDADAM_TARGETS = ("attn", "attention", "mlp", "ffn", "feed_forward", "intermediate", "output.dense")


def ldadam_param_groups(
    model: nn.Module,
    rank: int = 16,
    targets: Iterable[str] = LDADAM_TARGETS,
    *,
    verbose: bool = False,
    return_summary: bool = False,
    **group_options: Any,
) -> list[dict[str, Any]] | tuple[list[dict[str, Any]], str]:
    """Param groups for ``LDAdamW``: the 2-D weights of modules whose path contains one of ``targets``
    (case-insensitive; attention and MLP projections, LoRA factors within them included) go low-rank with ``rank``
    and ``group_options`` (``rho``, ``proj_type``, ``error_feedback``, ...); embeddings, the head, norms and biases
    get AdamW, biases and norms without weight decay (adamlab's ``no_weight_decay`` policy).

    A target matrix with ``min(m, n) <= rank`` has nothing to compress and stays AdamW. This is what happens to LoRA
    factors (whose smaller side is the LoRA rank) unless ``rank`` is below the LoRA rank. ``verbose=True`` prints
    which parameter went where; ``return_summary=True`` returns ``(groups, summary)``.
    """
    targets = tuple(t.lower() for t in targets)
    lowrank, decay, no_decay, rows, seen = [], [], [], [], set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:  # frozen, or tied to one already placed
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            targeted = (
                param.dim() == 2
                and not isinstance(module, nn.Embedding)
                and any(t in module_name.lower() for t in targets)
            )
            if targeted and min(param.shape) > rank:
                m, n = param.shape
                side = "right" if _projects_right(m, n, group_options.get("proj_type", "std")) else "left"
                ratio = _state_elements(m, n, rank) / (2 * m * n)
                lowrank.append(param)
                rows.append((name, param.shape, "low-rank", f"{side}, state {ratio:.1%} of AdamW's"))
            elif no_weight_decay(name, param, module):
                no_decay.append(param)
                rows.append((name, param.shape, "adamw", "no weight decay"))
            else:
                decay.append(param)
                note = f"min(shape) <= rank {rank}: nothing to compress" if targeted else "not a target"
                rows.append((name, param.shape, "adamw", note))
    if not lowrank:
        warnings.warn(f"ldadam_param_groups: no matrix goes low-rank at rank {rank}; LDAdamW runs AdamW", stacklevel=2)
    groups = [
        {"params": lowrank, "enable_lowrank": True, "rank": rank, **group_options},
        {"params": decay, "enable_lowrank": False},
        {"params": no_decay, "enable_lowrank": False, "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    summary = _summary(rows, lowrank, rank)
    if verbose:
        print(summary)
    return (groups, summary) if return_summary else groups


def _summary(rows: list[tuple], lowrank: list[Tensor], rank: int) -> str:
    width = max((len(row[0]) for row in rows), default=0)
    lines = [
        f"{name:<{width}}  {'x'.join(map(str, shape)):>11}  {where:<8}  {note}" for name, shape, where, note in rows
    ]
    total = sum(math.prod(shape) for _, shape, _, _ in rows)
    in_lowrank = sum(p.numel() for p in lowrank)
    state = sum(_state_elements(*p.shape, rank) for p in lowrank) + 2 * (total - in_lowrank)
    lines.append(
        f"{len(lowrank)} low-rank matrices ({in_lowrank:,} of {total:,} parameters); optimizer state "
        f"{state / max(2 * total, 1):.1%} of AdamW's, error buffers excluded"
    )
    return "\n".join(lines)
