"""Switch: named optimizers run one after another over step ranges (warm up with SGD, then AdamW, then Adafactor;
SWATS-style Adam to SGD).

``Switch`` takes optimizer instances over the same parameters and the steps at which each next one takes over, as
``torch.optim.lr_scheduler.SequentialLR`` takes schedulers; ``create_optimizer("switch", ...)`` builds the phases
from registry names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from ._common import check_positive_int, step_without_global_hooks

__all__ = ["Switch"]

# Optimizer classes whose per-parameter state has the same keys and meaning, so a phase can take it over as is.
_SAME_STATE = ({torch.optim.Adam, torch.optim.AdamW},)


class Switch(Optimizer):
    r"""Runs optimizer :math:`A_i` for the steps :math:`t \in [M_{i-1}, M_i)`, with milestones
    :math:`0 = M_0 < M_1 < \ldots`; the last optimizer runs to the end.

    .. math::
        \begin{aligned}
            &\textbf{input}: \text{optimizers } A_1, \ldots, A_n \text{ over the same parameters},
                \text{ milestones } M_1 < \ldots < M_{n-1}, \theta_0 \\
            &\textbf{for}\ t = 0, 1, \ldots\ \textbf{do} \\
            &\quad i \leftarrow 1 + |\{j : M_j \le t\}| \\
            &\quad \textbf{if}\ t = M_{i-1} > 0 \textbf{ and } \text{carry}(A_{i-1}, A_i):\
                \text{state}_{A_i} \leftarrow \text{state}_{A_{i-1}} \\
            &\quad \gamma_{A_i} \leftarrow \gamma^{base}_{A_i} \cdot \gamma_t / \gamma_0
                \quad (\text{the schedule's factor, see below}) \\
            &\quad \theta_{t+1} \leftarrow A_i(\theta_t) \\
            &\textbf{return}\ \theta
        \end{aligned}

    **What carries over at a switch.** A phase takes over the previous phase's per-parameter state (momentum,
    second moments, step counts and so their bias corrections) only when both keep the same state: the same class
    (SGD to SGD with another momentum, AdamW to AdamW with another weight decay), or Adam and AdamW with the same
    ``amsgrad``. Every other switch resets: the new phase starts from its own fresh state (zero momentum, a new
    step count), as if it were built at that step. Carrying SGD's momentum into Adam is not done: Adam's bias
    correction would rescale it, and its second moment would start at zero under a step count that says otherwise.
    ``carry=False`` resets at every switch.

    **Learning rates and schedules.** ``param_groups`` are the Switch's own (one per group of the first phase; all
    phases must group the parameters alike) and hold only ``params`` and ``lr``: an LR scheduler on the Switch sets
    them, and before each step every group of the active phase gets its own base lr (the lr it was built with)
    times the factor :math:`\gamma_t / \gamma_0` of the matching Switch group. So SGD at lr 0.1 then AdamW at 1e-3
    follow one cosine schedule, each at its own scale. A phase built without an lr (an lr-free optimizer) keeps
    its own. Schedulers that also drive momentum or betas (``OneCycleLR``'s cycling) are not supported.

    **State.** :meth:`state_dict` holds the completed step count and every phase's state dict, so a run resumed in
    any phase continues bit for bit. Global step hooks fire once per step, for the Switch; each phase's own hooks
    fire around its steps.

    Args:
        optimizers: the phases, in order, each over the same parameters in the same groups.
        milestones: the steps (0-based counts of completed steps) at which the 2nd, 3rd, ... phase takes over;
            one fewer than ``optimizers``, strictly increasing, >= 1.
        carry: take over the previous phase's state where it has the same meaning (see above).
    """

    def __init__(self, optimizers: Sequence[Optimizer], milestones: Sequence[int], *, carry: bool = True) -> None:
        optimizers = list(optimizers)
        if not optimizers or not all(isinstance(o, Optimizer) for o in optimizers):
            raise TypeError("Switch takes a non-empty list of torch.optim.Optimizer instances")
        milestones = list(milestones)
        if len(milestones) != len(optimizers) - 1:
            raise ValueError(f"Invalid milestones: {milestones!r} (expected {len(optimizers) - 1} steps for "
                             f"{len(optimizers)} optimizers)")
        for milestone in milestones:
            check_positive_int(milestone, "milestone")
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"Invalid milestones: {milestones!r} (expected strictly increasing steps)")
        if not isinstance(carry, bool):
            raise ValueError(f"Invalid carry: {carry!r} (expected a bool)")
        layout = [[id(p) for p in group["params"]] for group in optimizers[0].param_groups]
        for index, optimizer in enumerate(optimizers[1:], start=2):
            if [[id(p) for p in group["params"]] for group in optimizer.param_groups] != layout:
                raise ValueError(f"Switch: optimizer {index} ({type(optimizer).__name__}) does not hold the first "
                                 "one's parameters in the same param groups; every phase must group them alike")
        groups = [{"params": group["params"], "lr": group.get("lr")} for group in optimizers[0].param_groups]
        super().__init__(groups, dict(lr=groups[0]["lr"], carry=carry))
        self.optimizers, self.milestones = optimizers, milestones
        for group in [*self.param_groups, *(g for optimizer in optimizers for g in optimizer.param_groups)]:
            group["switch_base_lr"] = group.get("lr")
        self.completed_steps = 0

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add the group to every phase (each with its defaults) and to the Switch's own groups."""
        if not hasattr(self, "optimizers"):  # the constructor's own groups
            super().add_param_group(param_group)
            return
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for optimizer in self.optimizers:
            optimizer.add_param_group({**param_group, "params": params})
            optimizer.param_groups[-1]["switch_base_lr"] = optimizer.param_groups[-1].get("lr")
        super().add_param_group({"params": params, "lr": self.optimizers[0].param_groups[-1].get("lr")})
        self.param_groups[-1]["switch_base_lr"] = self.param_groups[-1]["lr"]

    def phase(self, step: int | None = None) -> int:
        """The index of the optimizer that takes step ``step`` (default: the next one)."""
        step = self.completed_steps if step is None else step
        return sum(milestone <= step for milestone in self.milestones)

    @property
    def active(self) -> Optimizer:
        """The optimizer that takes the next step."""
        return self.optimizers[self.phase()]

    def __repr__(self) -> str:
        phases = ", ".join(type(o).__name__ for o in self.optimizers)
        return f"Switch([{phases}], milestones={self.milestones}, carry={self.defaults['carry']})"

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim pickles only defaults, state and param_groups; the phases and the step count are needed too
        return {**super().__getstate__(), "optimizers": self.optimizers, "milestones": self.milestones,
                "completed_steps": self.completed_steps}

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        index = self.phase()
        optimizer = self.optimizers[index]
        if index > 0 and self.completed_steps == self.milestones[index - 1] and self.defaults["carry"]:
            _take_over_state(self.optimizers[index - 1], optimizer)
        for own, group in zip(self.param_groups, optimizer.param_groups):
            if group["switch_base_lr"] is not None and own["lr"] is not None:
                factor = own["lr"] / own["switch_base_lr"] if own["switch_base_lr"] else 1.0
                group["lr"] = group["switch_base_lr"] * factor
        loss = step_without_global_hooks(optimizer, closure)  # the phase evaluates the closure, as in its own step
        self.completed_steps += 1
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.active.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        state_dict = super().state_dict()
        state_dict["completed_steps"] = self.completed_steps
        state_dict["phases"] = [optimizer.state_dict() for optimizer in self.optimizers]
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        phases = state_dict.pop("phases")
        if len(phases) != len(self.optimizers):
            raise ValueError(f"the saved Switch has {len(phases)} phases, this one {len(self.optimizers)}")
        completed_steps = state_dict.pop("completed_steps")
        for optimizer, saved in zip(self.optimizers, phases):
            optimizer.load_state_dict(saved)
        super().load_state_dict(state_dict)
        self.completed_steps = completed_steps


def _can_carry(old: Optimizer, new: Optimizer) -> bool:
    if old.defaults.get("amsgrad") != new.defaults.get("amsgrad"):
        return False
    return type(old) is type(new) or any({type(old), type(new)} <= family for family in _SAME_STATE)


def _take_over_state(old: Optimizer, new: Optimizer) -> None:
    """Move the per-parameter state of ``old`` into ``new`` where it means the same there (see ``Switch``)."""
    if not _can_carry(old, new):
        return
    for group in old.param_groups:
        for p in group["params"]:
            if p in old.state:
                new.state[p] = old.state.pop(p)
