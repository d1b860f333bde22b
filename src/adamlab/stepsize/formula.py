r"""The AdamDDS step size as a formula: a constant Adam learning rate from the loss and the curvature at the start
of training, and the aggregation of per-batch curvatures into one constant.

.. math::

    \alpha = \sqrt{\frac{2\,(L(w_0) - L^*)}{\hat K \, T}}

* $L(w_0)$ (``L0``): the training loss at the weights the optimizer starts from, in eval mode, averaged over the
  estimation sample with the training loss's reduction (token-weighted); the per-example mean of the authors' LLM
  code is recorded too (``l0_reduction`` picks which one enters $\alpha$).
* $L^*$ (``loss_floor``): 0 for cross-entropy, as in both of the authors' codes.
* $\hat K$ (``K``): the smoothness constant, estimated as an aggregate (``max`` by default) over the estimation
  batches of each batch loss's Hessian spectral norm $\sigma_b = \|\nabla^2 L_b(w_0)\|_2$, over the trainable
  parameters (LoRA's A and B). ``n_inits > 1`` adds the paper's Algorithm 2: the same over re-drawn
  initialisations, aggregated together.
* $T$ (``horizon``): the number of optimizer steps of the run, as in the theorem (``"steps"`` with
  ``total_steps``, or an integer). ``"one"`` (or 1) is $T = 1$, which is what the authors' LLM code hard-codes
  although their runs train 3,125 steps: it gives an $\alpha$ $\sqrt{3125} \approx 55.9$ times larger. Both are
  offered; the record always says which.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class Stepsize(float):
    """The step size alpha, a float; calling it scales it: ``estimate.alpha(0.5)`` is alpha / 2."""

    def __call__(self, multiplier: float = 1.0) -> float:
        return float(self) * multiplier


def constant_stepsize(loss0: float, smoothness: float, horizon: int, loss_floor: float = 0.0) -> float:
    r"""$\alpha = \sqrt{2 (L_0 - L^*) / (K T)}$, refusing inputs for which it is undefined or meaningless."""
    if not loss0 - loss_floor > 0:
        raise ValueError(f"L0 - loss_floor must be > 0, got L0={loss0}, loss_floor={loss_floor}")
    if not smoothness > 0 or not math.isfinite(smoothness):
        raise ValueError(f"the curvature estimate K must be finite and > 0, got {smoothness}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"the horizon T must be an int >= 1, got {horizon!r}")
    return math.sqrt(2.0 * (loss0 - loss_floor) / (smoothness * horizon))


def resolve_horizon(horizon: str | int, total_steps: int | None = None) -> tuple[int, str]:
    """``(T, mode)``: ``"steps"`` is ``total_steps`` (the planned run's optimizer steps, what the theorem means),
    ``"one"`` or 1 is T = 1 (the authors' LLM code), another integer n is T = n."""
    if horizon == "steps":
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"horizon 'steps' needs total_steps, the planned run's optimizer steps (an int >= 1), "
                             f"got {total_steps!r}")
        return total_steps, "steps"
    if horizon == "one" or (isinstance(horizon, int) and not isinstance(horizon, bool) and horizon == 1):
        return 1, "one"
    if isinstance(horizon, int) and not isinstance(horizon, bool) and horizon > 1:
        return horizon, "fixed"
    raise ValueError(f"horizon must be 'steps', 'one' or an int >= 1, got {horizon!r}")


def aggregate_values(values: Tensor, aggregate: str, dim: int = -1) -> Tensor:
    """``"max"``, ``"mean"`` or ``"quantile:<q>"`` (0 <= q <= 1, linear interpolation) along ``dim``."""
    if aggregate == "max":
        return values.amax(dim)
    if aggregate == "mean":
        return values.mean(dim)
    return torch.quantile(values, quantile_level(aggregate), dim=dim)


def quantile_level(aggregate: str) -> float:
    kind, _, level = aggregate.partition(":")
    try:
        q = float(level)
    except ValueError:
        q = math.nan
    if kind != "quantile" or not 0.0 <= q <= 1.0:
        raise ValueError(f"aggregate must be 'max', 'mean' or 'quantile:<q>' with 0 <= q <= 1, got {aggregate!r}")
    return q
