r"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks", §3.3): train
for a few steps while the learning rate grows exponentially from ``min_lr`` to ``max_lr`` and watch the loss.

Step $k$ of $n$ uses $\eta_k = \eta_{\min} (\eta_{\max}/\eta_{\min})^{k/(n-1)}$ on the next batch of a seeded
shuffle. The loss is smoothed by a bias-corrected exponential moving average
($\bar\ell_k = \mathrm{ema}_k / (1 - \beta^{k+1})$), and the test stops early once $\bar\ell_k$ exceeds
``diverge_factor`` times its minimum or is not finite.

Suggested learning rate (``rule``):

* ``"steepest"`` (default): the learning rate where the smoothed loss falls fastest per unit of
  $\log \eta$, searched up to the smoothed minimum: the largest rate that is still clearly improving the loss.
  Fewer than three points before the minimum make slopes meaningless; then ``"min_div_10"`` is used and recorded.
* ``"min_div_10"``: a tenth of the learning rate at the smoothed minimum, the common rule of thumb.

The model comes back as it was: parameter values, gradients and train/eval mode are restored, and the global RNG
(dropout draws from it) is forked and restored.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..optim import create_optimizer
from .hvp import resolve_parameters, restored_afterwards
from .spectral import seeded_generator

RULES = ("steepest", "min_div_10")


@dataclass
class RangeTestResult:
    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggested_lr: float
    rule: str  # the rule that produced suggested_lr (a fallback is recorded as such)
    lr_at_min_loss: float
    min_smoothed_loss: float
    stopped_early: bool
    optimizer: str
    min_lr: float
    max_lr: float
    num_steps: int
    batch_size: int
    seed: int
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"method": "range_test", **asdict(self)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


def lr_range_test(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, list], Tensor],
    data: Sequence,
    *,
    params: str | Sequence[Tensor] = "trainable",
    optimizer: str = "adam",
    optimizer_kwargs: dict[str, Any] | None = None,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    num_steps: int = 100,
    batch_size: int = 16,
    seed: int = 0,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    rule: str = "steepest",
    progress: Callable[[int, int], None] | None = None,
) -> RangeTestResult:
    """Run the range test with ``optimizer`` (a registry name) on ``loss_fn(model, batch)``, the same loss and
    data the step-size estimate uses, in training mode; see the module docstring for the schedule and the rule."""
    if not 0 < min_lr < max_lr or not math.isfinite(max_lr):
        raise ValueError(f"need 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    for name, value, minimum in (("num_steps", num_steps, 2), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if not 0 <= smoothing < 1 or not diverge_factor > 1:
        raise ValueError(f"need 0 <= smoothing < 1 and diverge_factor > 1, got {smoothing}, {diverge_factor}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    data = list(data)
    if not data:
        raise ValueError("no examples for the range test")
    tensors = [p for _, p in resolve_parameters(model, params)]
    optim = create_optimizer(optimizer, tensors, lr=min_lr, **(optimizer_kwargs or {}))
    ratio = max_lr / min_lr
    lrs, losses, smoothed = [], [], []
    average, stopped_early = 0.0, False

    started = time.perf_counter()
    with restored_afterwards(model, tensors, seed):
        model.train()
        order = _batches(len(data), batch_size, seed)
        for k in range(num_steps):
            lr = min_lr * ratio ** (k / (num_steps - 1))
            for group in optim.param_groups:
                group["lr"] = lr
            for p in tensors:
                p.grad = None
            loss = loss_fn(model, [data[i] for i in next(order)])
            value = loss.item()
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):
                stopped_early = True
                break
            average = smoothing * average + (1 - smoothing) * value
            smoothed.append(average / (1 - smoothing ** (k + 1)))
            if progress is not None:
                progress(k + 1, num_steps)
            if smoothed[-1] > diverge_factor * min(smoothed):
                stopped_early = True
                break
            loss.backward()
            optim.step()

    if not smoothed:
        raise ValueError(f"the loss is not finite at min_lr={min_lr}: nothing to suggest")
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    suggested, used_rule = _suggest(lrs[: len(smoothed)], smoothed, best, rule)
    return RangeTestResult(lrs, losses, smoothed, suggested, used_rule, lrs[best], smoothed[best], stopped_early,
                           optimizer, min_lr, max_lr, num_steps, batch_size, seed, time.perf_counter() - started)


def _batches(n: int, batch_size: int, seed: int):
    """Consecutive batches of seeded shuffles of range(n), a new shuffle per pass."""
    generator = seeded_generator(seed, "range_test")
    while True:
        permutation = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield permutation[start : start + batch_size]


def _suggest(lrs: list[float], smoothed: list[float], best: int, rule: str) -> tuple[float, str]:
    if rule == "steepest" and best >= 2:
        log_lrs = torch.tensor(lrs[: best + 1], dtype=torch.float64).log()
        slopes = torch.gradient(torch.tensor(smoothed[: best + 1], dtype=torch.float64), spacing=(log_lrs,))[0]
        return lrs[int(slopes.argmin())], "steepest"
    return lrs[best] / 10, "min_div_10"
