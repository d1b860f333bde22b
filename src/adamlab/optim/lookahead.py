"""Lookahead: slow weights that move toward the fast weights of any inner optimizer every k steps.

``Lookahead`` wraps an optimizer instance and is itself a ``torch.optim.Optimizer`` (state_dict, param groups and
hooks included); the slow-weight sync is ``_single_tensor_lookahead_sync`` / ``_multi_tensor_lookahead_sync``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import (
    check_positive_int,
    group_by_device_and_dtype,
    real_views,
    step_without_global_hooks,
    use_foreach,
)

__all__ = ["Lookahead"]


class Lookahead(Optimizer):
    r"""Lookahead (Zhang et al., 2019, "Lookahead Optimizer: k steps forward, 1 step back", arXiv:1907.08610)
    around any inner optimizer. Textbook semantics (paper Algorithm 1), as ``pytorch_optimizer.Lookahead`` with
    ``pullback_momentum='none'``.

    .. math::
        \begin{aligned}
            &\textbf{input}: \text{inner optimizer } A, k, \alpha, \theta_0 \\
            &\textbf{initialize}: \phi \leftarrow \theta_0 \text{ (slow weights)} \\
            &\textbf{for}\ t = 1, 2, \ldots\ \textbf{do} \\
            &\quad \theta_t \leftarrow A(\theta_{t-1}) \quad (\text{one inner step: the fast weights}) \\
            &\quad \textbf{if}\ t \bmod k = 0\ \textbf{then} \\
            &\quad\quad \phi \leftarrow \phi + \alpha (\theta_t - \phi) \\
            &\quad\quad \theta_t \leftarrow \phi \\
            &\textbf{return}\ \theta_t
        \end{aligned}

    Choices where the references differ:

    * Slow weights are created lazily, the first time a parameter has a gradient at ``step()``, as a copy of its
      value just before that inner step (so with a closure too). A parameter joins its group's cycle unchanged since
      the cycle began, so this is the paper's :math:`\phi` without holding copies of parameters that never train.
      ``torch_optimizer.Lookahead`` instead takes them after the first inner step and syncs at steps 1, k + 1, ...
    * The cycle counter is per param group (``group["lookahead_step"]``, Lookahead steps taken), so a group added
      with :meth:`add_param_group` starts its own cycle. A sync updates every parameter of the group that has slow
      weights, with a gradient this step or not (``pytorch_optimizer`` syncs only those with a gradient).
    * :math:`\alpha = 1` returns the inner optimizer exactly; :math:`\alpha = 0` resets the fast weights every k
      steps.

    Step hooks: the global ones (``torch.optim.optimizer.register_optimizer_step_pre_hook`` / ``_post_hook``) fire
    once per step, for the Lookahead; the inner optimizer's own hooks fire around its step as usual.

    ``param_groups`` is the inner optimizer's list, so LR schedulers built on the Lookahead drive the inner
    optimizer, and ``defaults`` are the inner optimizer's plus ``lookahead_k``, ``lookahead_alpha`` and
    ``lookahead_foreach`` (``OneCycleLR`` looks there for betas or momentum). ``state`` holds only the slow weights
    (``slow_param``); the inner state stays in ``optimizer.state``. :meth:`state_dict` nests the inner optimizer's
    under ``"inner_optimizer"``.

    Args:
        optimizer: the inner optimizer, any ``torch.optim.Optimizer``.
        k: inner steps per sync (int >= 1, default 5).
        alpha: slow-weight step size :math:`\alpha` in [0, 1] (default 0.5).
        foreach: use the multi-tensor sync (``None`` = whenever the tensors allow it).
    """

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5, *, foreach: bool | None = None) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"Lookahead wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        check_positive_int(k, "k")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"Invalid alpha: {alpha!r} (expected a float in [0, 1])")
        self.optimizer = optimizer
        # Optimizer.__init__ would build param groups of its own; __setstate__ sets up the rest (hooks, step
        # profiling) the same way, and param_groups stays the inner optimizer's.
        defaults = {**optimizer.defaults, "lookahead_k": k, "lookahead_alpha": alpha, "lookahead_foreach": foreach}
        super().__setstate__(dict(defaults=defaults, state=defaultdict(dict)))

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state, "optimizer": self.optimizer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Optimizer.load_state_dict hands the loaded groups over here; they belong to the inner optimizer.
        param_groups = state.pop("param_groups", None)
        super().__setstate__(state)
        if param_groups is not None:
            self.optimizer.param_groups = param_groups

    def __repr__(self) -> str:
        k, alpha = self.defaults["lookahead_k"], self.defaults["lookahead_alpha"]
        return f"Lookahead(k={k}, alpha={alpha}, optimizer={self.optimizer!r})"

    def state_dict(self) -> dict[str, Any]:
        state_dict = super().state_dict()
        state_dict["inner_optimizer"] = self.optimizer.state_dict()
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.optimizer.load_state_dict(state_dict.pop("inner_optimizer"))
        super().load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        # With a closure the gradients appear only inside the inner step, so snapshot every parameter that may get
        # one and keep the snapshots of those that did.
        joining = {
            p: p.detach().clone()
            for group in self.param_groups
            for p in group["params"]
            if p not in self.state and (p.grad is not None or (closure is not None and p.requires_grad))
        }
        loss = step_without_global_hooks(self.optimizer, closure)
        for p, slow in joining.items():
            if p.grad is not None:
                self.state[p]["slow_param"] = slow
        for group in self.param_groups:
            # Counted from the group's first step, so a group added later (here or on the inner optimizer) starts
            # its own cycle.
            group["lookahead_step"] = group.get("lookahead_step", 0) + 1
            if group["lookahead_step"] % self.defaults["lookahead_k"] == 0:
                self._sync(group)
        return loss

    @torch.no_grad()
    def _sync(self, group: dict[str, Any]) -> None:
        fast = [p for p in group["params"] if p in self.state]
        if not fast:
            return
        slow = [self.state[p]["slow_param"] for p in fast]
        multi_tensor = use_foreach({"foreach": self.defaults["lookahead_foreach"]}, fast)
        sync = _multi_tensor_lookahead_sync if multi_tensor else _single_tensor_lookahead_sync
        sync(fast, slow, alpha=self.defaults["lookahead_alpha"])


def _single_tensor_lookahead_sync(fast: list[Tensor], slow: list[Tensor], *, alpha: float) -> None:
    fast, slow = real_views(fast, slow)
    for fast_param, slow_param in zip(fast, slow):
        slow_param.lerp_(fast_param, alpha)
        fast_param.copy_(slow_param)


def _multi_tensor_lookahead_sync(fast: list[Tensor], slow: list[Tensor], *, alpha: float) -> None:
    for (device_fast, device_slow), _ in group_by_device_and_dtype([fast, slow]):
        torch._foreach_lerp_(device_slow, device_fast, alpha)
        torch._foreach_copy_(device_fast, device_slow)
