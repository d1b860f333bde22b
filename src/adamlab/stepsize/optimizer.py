"""``adam_dds``: Adam at the constant data-dependent step size of an estimate."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .record import StepsizeEstimate


class AdamDDS(torch.optim.Adam):
    """Adam whose learning rate is ``multiplier`` x the estimate's alpha (the authors ran x0.5, x1 and x2), held
    constant: use it with the ``constant`` schedule and no warmup, as the theorem assumes.

    ``estimate``: a :class:`StepsizeEstimate` or the path of one saved with ``save``. A parameter group that
    carries ``dds_group="<label>"`` gets that group's own alpha from a per-group estimate. Every group records
    ``dds_alpha`` (before the multiplier) and ``multiplier``; there is no ``lr`` argument, the estimate sets it.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        estimate: StepsizeEstimate | str | Path | None = None,
        multiplier: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ):
        if estimate is None:
            raise ValueError("adam_dds needs a step-size estimate: pass estimate=<StepsizeEstimate or the path of its "
                             "JSON> (from adamlab.stepsize.estimate_stepsize or `adamlab lr --json`)")
        if not isinstance(estimate, StepsizeEstimate):
            estimate = StepsizeEstimate.load(estimate)
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not multiplier > 0:
            raise ValueError(f"multiplier must be a number > 0, got {multiplier!r}")
        alpha = float(estimate.alpha)
        super().__init__(params, lr=alpha * multiplier, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused)
        self.estimate = estimate
        self.defaults.update(dds_alpha=alpha, multiplier=multiplier)
        for group in self.param_groups:
            group_alpha = alpha if group.get("dds_group") is None else _group_alpha(estimate, group["dds_group"])
            group.update(lr=group_alpha * multiplier, dds_alpha=group_alpha, multiplier=multiplier)


def _group_alpha(estimate: StepsizeEstimate, label: str) -> float:
    if label not in estimate.groups:
        raise ValueError(f"parameter group dds_group={label!r} has no estimate; the estimate has "
                         f"{', '.join(estimate.groups) or 'no per-group estimates'}")
    alpha = estimate.groups[label].alpha
    if alpha is None:
        raise ValueError(f"group {label!r} has no curvature in the estimate (K = 0), so it has no step size")
    return alpha
